#!/bin/sh
# check_model's thread cases: the same driver and oracle, every pool in
# threads mode (FPT_MODE, tests/fpt.h); the process cases are listed in the
# log, not run.
FPT_MODE=threads exec ./tests/check_model
