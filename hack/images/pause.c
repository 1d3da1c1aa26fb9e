/*
 * The pod sandbox process of Kova's local node (containerd's sandbox_image).
 *
 * It holds the pod's namespaces open and does nothing else: it waits for
 * signals, reaps children re-parented to it (when a pod shares its process
 * namespace it is PID 1), and exits on SIGINT or SIGTERM. Built statically
 * by hack/build-images.sh, so the image holds this one file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("kova-pause 1.0");
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "kova-pause: warning: not PID 1\n");

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = stop;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return 1;
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) < 0)
		return 2;

	for (;;)
		pause();
}
