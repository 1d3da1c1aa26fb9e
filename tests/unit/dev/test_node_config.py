"""The local node's configuration files (kova/dev/node.py and addons/) as
the daemons read them: every placeholder filled, the settings this machine
kind needs present.  The cluster tier (tests/e2e/cluster/) runs them for real."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from kova.dev import node

HACK = Path(__file__).resolve().parents[3] / "hack"


def test_containerd_config():
    cfg = tomllib.loads(node.CONTAINERD_CONFIG.format(
        root="/r", state="/s", socket="/run/x.sock", pause_image=node.PAUSE_IMAGE,
        cni_bin_dir=node.CNI_BIN_DIR, cni_conf_dir="/c"))
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cfg["version"] == 2 and cfg["grpc"]["address"] == "/run/x.sock"
    # a root without CAP_SYS_RESOURCE cannot set the sandbox's -998 OOM score
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == node.PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"


def _render(template: str, **kw) -> dict:
    docs = [d for d in yaml.safe_load_all(node._render(template, **kw)) if d]
    return docs[0] if len(docs) == 1 else docs


def test_kubelet_config():
    cfg = _render("kubelet.yaml", socket="/run/c.sock", address=node.NODE_ADDRESS, port="10250",
                  healthz_port="10248", client_ca="/ca.crt", dns=node.DNS_SERVICE_IP,
                  domain=node.CLUSTER_DOMAIN, pod_logs="/logs", volume_plugins="/vp")
    assert cfg["kind"] == "KubeletConfiguration"
    # cgroup v1 only here; kubelet >= 1.35 refuses it unless told
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["containerRuntimeEndpoint"] == "unix:///run/c.sock"
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["clusterDNS"] == [node.DNS_SERVICE_IP] and cfg["readOnlyPort"] == 0


def test_kube_proxy_and_addons():
    proxy = _render("kube-proxy.yaml", kubeconfig="/k", node="n", healthz="127.0.0.1:1",
                    metrics="127.0.0.1:2", pod_subnet=node.POD_SUBNET,
                    node_address=node.NODE_ADDRESS)
    assert proxy["mode"] == "nftables" and proxy["conntrack"]["maxPerCore"] == 0
    dns = _render("coredns.yaml", image="img", dns_ip=node.DNS_SERVICE_IP,
                  domain=node.CLUSTER_DOMAIN)
    kinds = {d["kind"]: d for d in dns}
    assert kinds["Service"]["spec"]["clusterIP"] == node.DNS_SERVICE_IP
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"kubernetes {node.CLUSTER_DOMAIN} " in kinds["ConfigMap"]["data"]["Corefile"]
    pv = _render("local-pv.yaml", name="pv", path="/v", size="8Gi", node="n",
                 storage_class=node.STORAGE_CLASS)
    assert pv["spec"]["local"]["path"] == "/v"
    sc = _render("storage.yaml", storage_class=node.STORAGE_CLASS)
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_a_missing_placeholder_is_an_error():
    with pytest.raises(KeyError):
        node._render("kube-proxy.yaml", kubeconfig="/k")


@pytest.mark.parametrize("script", ["build-images.sh", "build-coredns.sh", "package-chart.sh",
                                    "build-control-plane.sh"])
def test_scripts_parse_and_print_their_usage(script):
    assert subprocess.run(["bash", "-n", str(HACK / script)]).returncode == 0
    if script != "package-chart.sh":
        out = subprocess.run(["bash", str(HACK / script), "--help"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "Usage" in out.stdout + out.stderr


def test_build_images_rejects_an_unknown_image():
    out = subprocess.run(["bash", str(HACK / "build-images.sh"), "nginx"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "unknown image: nginx" in out.stderr


def test_test_image_is_placed_as_a_file_not_a_symbolic_link(tmp_path):
    """An agent in a pod mounts only the image directory: a symbolic link to
    the cache outside it would dangle there (ImageNotFound)."""
    from kova.dev.stack import link_test_image

    cache = tmp_path / "cache"
    cache.mkdir()
    src = cache / "kova-test-1234.qcow2"
    src.write_bytes(b"QFI\xfb" + b"\0" * 60)
    alias = cache / "kova-test.qcow2"
    alias.symlink_to(src.name)  # the cache's own "newest build" link
    dest = link_test_image(alias, tmp_path / "images" / "kova-test.qcow2")
    assert dest.is_file() and not dest.is_symlink()
    assert dest.stat().st_ino == src.stat().st_ino  # a hard link to the build
    again = link_test_image(alias, dest)  # idempotent, replaces atomically
    assert again == dest and dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["kova-test.qcow2"]
