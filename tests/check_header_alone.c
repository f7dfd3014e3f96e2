/* The public header must compile first and alone, and link as C. */
#include <forkpool.h>
#include <forkpool.h> /* and twice */

#include "config.h" /* after: only to compare the version */

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(strerror_covers_every_code)
{
#define FP__CHECK_ERR(name, value, msg)                                       \
  ck_assert_str_eq(fp_strerror(FP_##name), msg);                              \
  ck_assert_str_eq(fp_err_name(FP_##name), "FP_" #name);
  FP_ERRNO_MAP(FP__CHECK_ERR)
#undef FP__CHECK_ERR
  ck_assert_str_eq(fp_err_name(12345), "UNKNOWN");
  ck_assert_str_eq(fp_strerror(12345), "unknown error");
  ck_assert_str_eq(fp_strerror(0), "success");
  ck_assert_ptr_nonnull(fp_strerror(-ENOENT));
  ck_assert_str_eq(fp_version(), PACKAGE_VERSION);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("header");
  TCase *tc = tcase_create("alone");
  tcase_add_test(tc, strerror_covers_every_code);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
