/* Probe (passes: 10 of 10 runs fail as promised).  Build:
 *   gcc -Iinclude tests/contract/init_other.c -Llib/.libs -lforkpool -lmsgpackc
 * fp_pool_create(3): "A worker that fails its init before fp_pool_create()
 * returns, the first or another, makes it fail".  Worker A (first to get
 * the O_EXCL file) waits until worker B's failure is written and B has
 * exited, then reports ready. */
#define _GNU_SOURCE
#include <forkpool.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static char dir[64];
static int init(void **st, void *arg, fp_call *call)
{
  (void)st; (void)arg;
  char path[128], pidpath[128];
  snprintf(path, sizeof path, "%s/first", dir);
  snprintf(pidpath, sizeof pidpath, "%s/pid", dir);
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd >= 0) {
    close(fd);
    for (int i = 0; i < 10000; i++) {      /* wait for B's pid */
      FILE *f = fopen(pidpath, "r");
      int pid = 0;
      if (f) { if (fscanf(f, "%d", &pid) != 1) pid = 0; fclose(f); }
      if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)
        return 0;                         /* B is gone: ready now */
      usleep(1000);
    }
    return 0;
  }
  char tmp[128];
  snprintf(tmp, sizeof tmp, "%s/pid.tmp", dir);
  FILE *f = fopen(tmp, "w");
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  rename(tmp, pidpath);
  return fp_call_fail(call, "InitError", "second");
}
int main(void)
{
  int fails = 0, oks = 0;
  for (int k = 0; k < 10; k++) {
    snprintf(dir, sizeof dir, "/tmp/fpt-probe2-XXXXXX");
    mkdtemp(dir);
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.workers = 2;
    o.init = init;
    int rc = fp_pool_create(&p, &o);
    if (rc == 0) { oks++; fp_pool_destroy(p); } else fails++;
    printf("run %d: %s %s\n", k, fp_err_name(rc), rc ? fp_pool_create_error() : "");
    char cmd[128]; snprintf(cmd, sizeof cmd, "rm -rf %s", dir); system(cmd);
  }
  printf("failed %d, succeeded %d\n", fails, oks);
  return oks != 0;
}
