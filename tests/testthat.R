# The tests call the real Python core through reticulate: set RETICULATE_PYTHON
# to a Python with pydp-r installed. They skip when it is missing, unless
# PYDPR_REQUIRE_PYTHON=true, which turns a missing core into a failure.
library(testthat)
library(pydpr)

test_check("pydpr")
