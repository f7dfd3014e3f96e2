/*
 * Task tables.  The process-wide table filled by fp_task_register is copied
 * into each pool at create time, together with the pool's own rows, so a
 * pool never reads global state after it starts.
 */
#include "forkpool-private.h"

#include <stdlib.h>
#include <string.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static fp_task *registry;   /* owned names; grows by doubling */
static size_t registry_n, registry_cap;

int fp__task_name_ok(const char *name)
{
  return name != NULL && name[0] != '\0' && strlen(name) <= FP__MAX_NAME;
}

static fp_task_fn find(const fp_task *rows, size_t n, const char *name,
                       size_t len)
{
  for (size_t i = 0; i < n; i++)
    if (strlen(rows[i].name) == len && memcmp(rows[i].name, name, len) == 0)
      return rows[i].fn; /* name may hold a NUL: it came off the wire */
  return NULL;
}

FP_EXTERN int fp_task_register(const char *name, fp_task_fn fn)
{
  if (!fp__task_name_ok(name) || fn == NULL)
    return FP_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&registry_lock);
  fp_task_fn old = find(registry, registry_n, name, strlen(name));
  if (old != NULL) {
    rc = old == fn ? 0 : FP_EINVAL;
    goto out;
  }
  if (registry_n == registry_cap) {
    size_t cap = registry_cap ? registry_cap * 2 : 16;
    fp_task *rows = realloc(registry, cap * sizeof *rows);
    if (rows == NULL) {
      rc = FP_ENOMEM;
      goto out;
    }
    registry = rows;
    registry_cap = cap;
  }
  char *copy = strdup(name);
  if (copy == NULL) {
    rc = FP_ENOMEM;
    goto out;
  }
  registry[registry_n].name = copy;
  registry[registry_n].fn = fn;
  registry_n++;
out:
  pthread_mutex_unlock(&registry_lock);
  return rc;
}

static int append(fp__tasks *t, const char *name, fp_task_fn fn)
{
  if (!fp__task_name_ok(name) || fn == NULL)
    return FP_EINVAL;
  fp_task_fn old = fp__tasks_find(t, name, strlen(name));
  if (old != NULL)
    return old == fn ? 0 : FP_EINVAL;
  char *copy = strdup(name);
  if (copy == NULL)
    return FP_ENOMEM;
  t->rows[t->n].name = copy;
  t->rows[t->n].fn = fn;
  t->n++;
  return 0;
}

/* The pool's rows first, then the registry's; a name may not mean two. */
int fp__tasks_build(fp__tasks *t, const fp_task *own)
{
  size_t n_own = 0;
  while (own != NULL && own[n_own].name != NULL)
    n_own++;
  int rc = 0;
  t->n = 0;
  pthread_mutex_lock(&registry_lock);
  t->rows = calloc(n_own + registry_n + 1, sizeof *t->rows);
  if (t->rows == NULL)
    rc = FP_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n_own; i++)
    rc = append(t, own[i].name, own[i].fn);
  for (size_t i = 0; rc == 0 && i < registry_n; i++)
    rc = append(t, registry[i].name, registry[i].fn);
  pthread_mutex_unlock(&registry_lock);
  if (rc != 0)
    fp__tasks_free(t);
  return rc;
}

void fp__tasks_free(fp__tasks *t)
{
  for (size_t i = 0; t->rows != NULL && i < t->n; i++)
    free((char *)t->rows[i].name);
  free(t->rows);
  t->rows = NULL;
  t->n = 0;
}

fp_task_fn fp__tasks_find(const fp__tasks *t, const char *name, size_t len)
{
  return find(t->rows, t->n, name, len);
}
