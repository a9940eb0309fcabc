#' Install the Python core of pydpr into a virtual environment
#'
#' Creates a Python virtual environment (with
#' [reticulate::virtualenv_create()]) and installs the Python package `pydp-r`
#' with its dependencies (TensorFlow, Keras 3, dp-accounting, ...) into it from
#' the pydp_r source tree, since the package is not on PyPI. Afterwards restart
#' R and select the environment before the first pydpr call:
#' `reticulate::use_virtualenv("r-pydpr", required = TRUE)`.
#'
#' The NumPy installed is one that the installed 'reticulate' converts R arrays
#' to: 'reticulate' reads NumPy 2 from version 1.38.0 on, so with an older one
#' (Debian 12 ships 1.28) pip is given the constraint `numpy<2` (TensorFlow
#' accepts NumPy 1.26), and with a current one NumPy 2 stays. Either way
#' `model$fit(x, y)` then takes R matrices and arrays as they are.
#'
#' @param envname Name of the virtual environment (kept in reticulate's
#'   folder of environments), or a path to it. Defaults to `"r-pydpr"`. An
#'   existing environment is reused and the package installed or upgraded.
#' @param source `NULL` (default) or the path of the pydp_r source tree (the
#'   folder with `pyproject.toml`, which is also the R package's folder).
#'   `NULL` means the folder this R package was installed from, when that is
#'   known (it is after `R CMD INSTALL <folder>`, not after installing from a
#'   tarball); otherwise `source` must be given.
#' @param python `NULL` (default: the Python 'reticulate' picks) or the path of
#'   the Python (>= 3.10) from which to create the environment.
#' @param pip_options Extra options for `pip install`, a character vector.
#'   Defaults to `character()`.
#' @param ... Further arguments passed to [reticulate::virtualenv_create()].
#'
#' @return The path of the environment's Python, invisibly.
#' @export
#' @examples
#' \dontrun{
#' install_pydpr(source = "~/src/pydp_r")
#' # restart R, then
#' reticulate::use_virtualenv("r-pydpr", required = TRUE)
#' library(pydpr)
#' }
install_pydpr <- function(envname = "r-pydpr", source = NULL, python = NULL,
                          pip_options = character(), ...) {
  check_string(envname, "envname")
  source <- resolve_source(source)
  check_string(python, "python", null_ok = TRUE)
  if (!is.character(pip_options) || anyNA(pip_options)) {
    argument_error("pip_options", "a character vector without NA",
                   pip_options, frame_call(environment()))
  }
  constraints <- numpy_constraint()
  if (length(constraints) > 0L) {
    constraints_file <- tempfile("pydpr-constraints-", fileext = ".txt")
    writeLines(constraints, constraints_file)
    on.exit(unlink(constraints_file), add = TRUE)
    pip_options <- c(pip_options, "--constraint", shQuote(constraints_file))
  }
  reticulate::virtualenv_create(envname, python = python, ...)
  reticulate::virtualenv_install(envname, packages = source,
                                 ignore_installed = FALSE,
                                 pip_options = pip_options)
  env_python <- reticulate::virtualenv_python(envname)
  message(
    "Installed pydp-r from ", source, " into the virtualenv '", envname,
    "'.\nRestart R, then call reticulate::use_virtualenv(\"", envname,
    "\", required = TRUE) before using pydpr (or set RETICULATE_PYTHON=",
    env_python, ")."
  )
  invisible(env_python)
}

# The working directory while R CMD INSTALL evaluated this file: the package
# source tree when installed from a folder, a temporary copy for a tarball.
installed_from <- getwd()

# Folders that may hold the pydp_r source tree: the folder the package was
# installed from, and the package folder itself (the source tree when loaded
# with pkgload).
source_candidates <- function() {
  candidates <- c(installed_from, system.file(package = "pydpr"))
  candidates[nzchar(candidates)]
}

is_pydp_r_source <- function(dir) {
  pyproject <- file.path(dir, "pyproject.toml")
  if (!file.exists(pyproject)) {
    return(FALSE)
  }
  any(grepl("^name\\s*=\\s*\"pydp-r\"", readLines(pyproject, warn = FALSE)))
}

# The source tree to install from, as an absolute path.
resolve_source <- function(source, candidates = source_candidates(),
                           call = frame_call(parent.frame())) {
  if (is.null(source)) {
    found <- Filter(is_pydp_r_source, candidates)
    if (length(found) == 0L) {
      message <- paste(
        "`source` is required: the folder pydpr was installed from is not",
        "known (it was installed from a tarball, or that folder is gone).",
        "Pass source = the path of the pydp_r source tree (the folder with",
        "pyproject.toml)."
      )
      stop(error_condition(message, "pydpr_argument_error", call))
    }
    return(normalizePath(found[[1]]))
  }
  check_string(source, "source", call = call)
  if (!is_pydp_r_source(path.expand(source))) {
    argument_error(
      "source",
      "the pydp_r source tree (a folder whose pyproject.toml names pydp-r)",
      source, call
    )
  }
  normalizePath(source)
}

# The pip constraint on NumPy that lets this reticulate convert R arrays:
# "numpy<2" before reticulate 1.38.0, none from then on. A constraint, not a
# requirement: it installs nothing by itself.
numpy_constraint <- function(reticulate_version = utils::packageVersion("reticulate")) {
  if (package_version(reticulate_version) < reticulate_reads_numpy_2) {
    return("numpy<2")
  }
  character()
}
