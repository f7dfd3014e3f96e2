#!/bin/sh
# check_api's tests again with every pool in threads mode (FPT_MODE, tests/fpt.h);
# the tests that need another mode are listed in the log, not run.
FPT_MODE=threads exec ./tests/check_api
