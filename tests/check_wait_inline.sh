#!/bin/sh
# check_wait's tests again with every pool in inline mode (FPT_MODE, tests/fpt.h);
# the tests that need another mode are listed in the log, not run.
FPT_MODE=inline exec ./tests/check_wait
