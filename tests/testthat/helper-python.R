# TensorFlow writes start-up chatter to stderr unless told not to; this must be
# set before Python starts.
if (!nzchar(Sys.getenv("TF_CPP_MIN_LOG_LEVEL"))) {
  Sys.setenv(TF_CPP_MIN_LOG_LEVEL = "2")
}

# Skips a test that needs the Python core when it cannot be imported, except
# under PYDPR_REQUIRE_PYTHON=true (CI), where that is an error: CI must show the
# tests ran against Python.
skip_if_no_core <- function() {
  if (pydp_r_available()) {
    return(invisible(TRUE))
  }
  reason <- paste(
    "the Python core pydp_r is not importable by",
    "reticulate (set RETICULATE_PYTHON to a Python with pydp-r installed)"
  )
  if (identical(tolower(Sys.getenv("PYDPR_REQUIRE_PYTHON")), "true")) {
    stop("PYDPR_REQUIRE_PYTHON=true but ", reason, call. = FALSE)
  }
  skip(paste("Skipped:", reason))
}

# The Python package itself, for comparisons that bypass the R wrappers.
python_core <- function() reticulate::import("pydp_r")

# A seeded regression problem: y = x %*% weights + 0.3 plus a little noise, as
# plain R matrices (x n x 3, y n x 1), which Keras takes as they are.
regression_data <- function(n = 256, weights = c(1, -2, 0.5), seed = 1) {
  set.seed(seed)
  x <- matrix(rnorm(n * length(weights)), ncol = length(weights))
  y <- x %*% weights + 0.3 + rnorm(n, sd = 0.05)
  list(x = x, y = y)
}

# A fresh one-layer Keras regression model (through Python, not keras3).
linear_model <- function(inputs = 3L, seed = 1L) {
  keras <- reticulate::import("keras")
  keras$utils$set_random_seed(seed)
  keras$Sequential(list(
    keras$Input(shape = list(inputs)),
    keras$layers$Dense(1L)
  ))
}
