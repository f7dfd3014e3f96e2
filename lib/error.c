/* The error table: names and messages generated from FP_ERRNO_MAP. */
#include "forkpool-private.h"

#include <string.h>

FP_EXTERN const char *fp_strerror(int err)
{
  switch (err) {
  case 0:
    return "success";
#define FP__ERR_MSG(name, value, msg)                                         \
  case value:                                                                 \
    return msg;
    FP_ERRNO_MAP(FP__ERR_MSG)
#undef FP__ERR_MSG
  }
  /* Other system errors arrive as -errno; glibc's table is static. */
  if (err < 0 && err > -4000)
    return strerror(-err);
  return "unknown error";
}

FP_EXTERN const char *fp_err_name(int err)
{
  switch (err) {
#define FP__ERR_NAME(name, value, msg)                                        \
  case value:                                                                 \
    return "FP_" #name;
    FP_ERRNO_MAP(FP__ERR_NAME)
#undef FP__ERR_NAME
  }
  return "UNKNOWN";
}

FP_EXTERN const char *fp_version(void)
{
  return PACKAGE_VERSION;
}
