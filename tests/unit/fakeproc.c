/* SPDX-License-Identifier: ISC */
/*
 * tgrunner-fakeapi for the unit tests: start, stop, and its files' bytes;
 * the test program's temporary directory and curl's global state.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fakeproc.h"

int
fakeproc_init(char *tmpdir)
{
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return 0;
}

int
fakeproc_fini(const char *tmpdir)
{
	char cmd[1024];

	curl_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0) {
		fprintf(stderr, "could not remove %s\n", tmpdir);
		return 1;
	}
	return 0;
}

pid_t
fakeproc_start(const char *tmpdir, const char *token, char *url,
    size_t urlsz)
{
	char		 bin[1024], portfile[1024], buf[32];
	const char	*bd = getenv("TG_BUILDDIR");
	pid_t		 pid;
	ssize_t		 n;
	int		 fd, i, devnull;

	snprintf(bin, sizeof(bin), "%s/tgrunner-fakeapi", bd ? bd : ".");
	snprintf(portfile, sizeof(portfile), "%s/port.%d", tmpdir, getpid());
	unlink(portfile);
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		if ((devnull = open("/dev/null", O_WRONLY)) != -1)
			dup2(devnull, 1);
		execl(bin, bin, "-l", "127.0.0.1:0", "-t", token, "-p",
		    portfile, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 1000; i++) {
		if ((fd = open(portfile, O_RDONLY)) != -1) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n > 0) {
				buf[n] = '\0';
				snprintf(url, urlsz, "http://127.0.0.1:%d",
				    atoi(buf));
				unlink(portfile);
				return pid;
			}
		}
		usleep(10000);
	}
	fprintf(stderr, "%s did not start (set TG_BUILDDIR)\n", bin);
	fakeproc_stop(pid);
	return -1;
}

int
fakeproc_stop(pid_t pid)
{
	int st;

	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	if (waitpid(pid, &st, 0) == -1)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* splitmix64, 8 bytes per value, low byte first: tests/fakeapi/fakeapi.c */
void
fakeproc_bytes(unsigned char *out, size_t size, uint64_t seed)
{
	uint64_t s = seed, v = 0, z;
	size_t i;

	for (i = 0; i < size; i++) {
		if (i % 8 == 0) {
			z = (s += 0x9e3779b97f4a7c15ULL);
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
			v = z ^ (z >> 31);
		}
		out[i] = (unsigned char)(v >> (8 * (i % 8)));
	}
}
