"""Package layout for Kova.

The top-level component folders are mapped onto ``kova.<part>``:
``operator/`` -> ``kova.operator``, ``agents/`` -> ``kova.agents``,
``crds/`` -> ``kova.crds``, ``placement/`` -> ``kova.placement``,
``api/`` -> ``kova.api``.

The ``operator/`` folder deliberately has no ``__init__.py`` (it is an
implicit namespace portion, only ever imported as ``kova.operator``): a regular
package called ``operator`` on ``sys.path`` -- for example the project root as
the current directory -- would shadow the standard library's ``operator``.
setuptools' editable finder cannot map a namespace portion under a regular
package, so ``kova/operator`` is a symlink to ``../operator`` that makes
``kova.operator`` resolve through ``kova.__path__`` in editable installs; a
wheel copies the files of ``operator/`` into ``kova/operator/``.
"""

from setuptools import find_namespace_packages, setup

PACKAGE_DIRS = {
    "kova": "kova",
    "kova.operator": "operator",
    "kova.agents": "agents",
    "kova.api": "api",
    "kova.crds": "crds",
    "kova.placement": "placement",
}


def _packages() -> list[str]:
    found: list[str] = []
    for package, folder in PACKAGE_DIRS.items():
        found.append(package)
        found.extend(
            f"{package}.{sub}"
            for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])
            if f"{package}.{sub}" not in PACKAGE_DIRS
        )
    return sorted(set(found))


setup(packages=_packages(), package_dir=PACKAGE_DIRS)
