#' Convert between R arrays and NumPy arrays
#'
#' `as_numpy_array()` turns an R vector, matrix or array into a NumPy array;
#' `as_r_array()` turns a NumPy array, a tensor or anything with an `__array__`
#' method back into an R array. Most code needs neither: 'reticulate' converts R
#' matrices and arrays to NumPy by itself, so `model$fit(x, y)` takes R arrays
#' as they are (a plain vector `y` becomes a Python list, which Keras refuses:
#' pass `as.array(y)` or `matrix(y)`).
#'
#' That native conversion needs a 'reticulate' that reads the installed NumPy:
#' 'reticulate' before 1.38.0 knows only NumPy 1 and fails under NumPy 2
#' ("Required version of NumPy not available"). [install_pydpr()] therefore
#' installs `numpy<2` for such a 'reticulate'. Where the combination is
#' incompatible anyway, these two functions still work: they then pass the values
#' as a flat Python list (column-major, then reshaped), which is slower but
#' works with any 'reticulate' and NumPy, and pydpr's own functions convert the
#' same way.
#'
#' @param x For `as_numpy_array()`: a numeric, integer, logical or character
#'   vector, matrix or array (no default). For `as_r_array()`: a NumPy array,
#'   a TensorFlow tensor, or another Python object NumPy can turn into an array
#'   (no default).
#' @param dtype `NULL` (default: NumPy's choice, float64 for R numbers) or a
#'   NumPy dtype name such as `"float32"`.
#'
#' @return `as_numpy_array()`: a NumPy array (a Python object) with the
#'   dimensions of `x` (a vector gives a 1-D array). `as_r_array()`: an R array
#'   with the array's shape (a 1-D array gives an array with one dimension; a
#'   0-D array gives a single value); integers that do not fit R's integers
#'   become doubles.
#' @name numpy-arrays
#' @examplesIf pydp_r_available()
#' x <- matrix(1:6, nrow = 2)
#' array <- as_numpy_array(x, dtype = "float32")
#' array$shape
#' as_r_array(array)
NULL

#' @rdname numpy-arrays
#' @export
as_numpy_array <- function(x, dtype = NULL) {
  if (!(is.atomic(x) && !is.null(x))) {
    argument_error("x", "an R vector, matrix or array", x,
                   frame_call(environment()))
  }
  check_string(dtype, "dtype", null_ok = TRUE)
  numpy <- reticulate::import("numpy", convert = FALSE)
  shape <- if (is.null(dim(x))) length(x) else dim(x)
  if (!is.character(x) && numpy_converts_natively()) {
    # A plain vector would become a Python list; with a dim it becomes an array.
    array <- reticulate::r_to_py(array(unname(as.vector(x)), dim = shape))
  } else {
    array <- flat_list_to_numpy(x, shape, numpy)
  }
  if (!is.null(dtype)) {
    array <- array$astype(dtype)
  }
  array
}

# The fallback for a 'reticulate' that cannot read the installed NumPy (and for
# strings, which reticulate turns into object arrays): values as a flat list.
flat_list_to_numpy <- function(x, shape, numpy) {
  values <- as.vector(x)
  # r_to_py() makes a Python list of a vector, but a scalar of length one.
  flat <- if (length(values) == 1L) list(values) else values
  array <- numpy$asarray(reticulate::r_to_py(flat))
  if (length(values) == 0L) {
    array <- numpy$asarray(array, dtype = empty_dtype(values))
  }
  array$reshape(as.list(as.integer(shape)), order = "F")
}

#' @rdname numpy-arrays
#' @export
as_r_array <- function(x) {
  check_python_object(x, "x", "a Python array or tensor",
                      frame_call(environment()))
  numpy <- reticulate::import("numpy", convert = FALSE)
  array <- numpy$asarray(x)
  kind <- to_r(array$dtype$kind)
  if (kind %in% c("i", "u")) {
    # Compared in Python: a Python int too large for R would wrap on the way.
    fits <- to_r(array$size) == 0L || (
      to_r(array$min()$`__ge__`(-.Machine$integer.max)$item()) &&
        to_r(array$max()$`__le__`(.Machine$integer.max)$item())
    )
    array <- array$astype(if (fits) "int32" else "float64")
  }
  shape <- as.integer(unlist(to_r(
    reticulate::import_builtins()$list(array$shape)
  )))
  if (length(shape) == 0L) {
    return(to_r(array$item()))
  }
  if (kind %in% c("f", "i", "u", "b") && numpy_converts_natively()) {
    values <- reticulate::py_to_r(array)
    dim(values) <- shape
    return(values)
  }
  values <- to_r(array$ravel(order = "F")$tolist())
  if (length(values) == 0L) {
    values <- vector(empty_mode(kind), 0L)
  }
  values <- unlist(values)
  dim(values) <- shape
  values
}

# The first 'reticulate' whose conversion of R arrays reads NumPy 2.
reticulate_reads_numpy_2 <- "1.38.0"

# Whether this reticulate converts R arrays to the installed NumPy and back
# (decided once per session).
numpy_converts_natively <- function() {
  if (is.null(conversion_state$native)) {
    conversion_state$native <- utils::packageVersion("reticulate") >=
      reticulate_reads_numpy_2 || numpy_major_version() < 2L
  }
  conversion_state$native
}

conversion_state <- new.env(parent = emptyenv())

numpy_major_version <- function() {
  version <- reticulate::py_to_r(
    reticulate::import("numpy", convert = FALSE)$`__version__`
  )
  as.integer(strsplit(version, ".", fixed = TRUE)[[1]][[1]])
}

# The message for a reticulate that cannot convert R arrays to this NumPy.
numpy_mismatch_message <- function(reticulate_version, numpy_version) {
  paste0(
    "reticulate ", reticulate_version, " cannot convert R matrices and arrays ",
    "to NumPy ", numpy_version, " (it reads NumPy 2 from reticulate ",
    reticulate_reads_numpy_2, " on), so model$fit(x, y) with R arrays fails ",
    "with \"Required version of NumPy not available\". Install NumPy 1 in the ",
    "Python that pydpr uses (pip install \"numpy<2\"; pydpr::install_pydpr() ",
    "does this) or a newer reticulate."
  )
}

# Warns once per session when R arrays cannot reach this NumPy natively.
warn_if_numpy_mismatch <- function() {
  if (isTRUE(conversion_state$warned) || numpy_converts_natively()) {
    return(invisible(FALSE))
  }
  conversion_state$warned <- TRUE
  numpy_version <- reticulate::py_to_r(
    reticulate::import("numpy", convert = FALSE)$`__version__`
  )
  warning(warningCondition(
    numpy_mismatch_message(utils::packageVersion("reticulate"), numpy_version),
    class = "pydpr_numpy_mismatch"
  ))
  invisible(TRUE)
}

# py_to_r() for Python objects; R values (already converted) pass unchanged.
to_r <- function(x) {
  if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x
}

empty_dtype <- function(values) {
  switch(typeof(values),
    integer = "int32", logical = "bool", character = "str", "float64"
  )
}

empty_mode <- function(kind) {
  switch(kind, i = , u = "integer", b = "logical", U = , S = "character",
         "double")
}

# Python result -> R: dicts become named lists, arrays R arrays, NumPy scalars
# R values, lists and tuples R lists; other objects are converted by reticulate
# as usual (a Dataset stays a Python object).
python_to_r <- function(x) {
  if (!inherits(x, "python.builtin.object")) {
    return(x)
  }
  if (inherits(x, "python.builtin.dict")) {
    keys <- to_r(reticulate::import_builtins()$list(x$keys()))
    values <- lapply(keys, function(key) python_to_r(x$get(key)))
    names(values) <- as.character(unlist(keys))
    return(values)
  }
  if (inherits(x, "numpy.ndarray")) {
    return(as_r_array(x))
  }
  if (inherits(x, "numpy.generic")) {
    return(to_r(x$item()))
  }
  if (inherits(x, c("python.builtin.list", "python.builtin.tuple"))) {
    items <- reticulate::import_builtins(convert = FALSE)$list(x)
    size <- to_r(items$`__len__`())
    return(lapply(seq_len(size) - 1L, function(i) {
      python_to_r(items$`__getitem__`(i))
    }))
  }
  to_r(x)
}

# R value -> Python for a nested structure such as a PPG-DaLiA subject: named
# lists become dicts (an empty list too: that is what an empty dict became in
# R), other lists Python lists, vectors and arrays NumPy arrays, single values
# Python scalars.
r_to_python <- function(x) {
  if (inherits(x, "python.builtin.object")) {
    return(x)
  }
  if (is.list(x)) {
    if (length(x) == 0L || !is.null(names(x))) {
      return(reticulate::py_dict(as.list(names(x)), lapply(unname(x), r_to_python),
                                 convert = FALSE))
    }
    return(reticulate::r_to_py(lapply(x, r_to_python)))
  }
  if (is.atomic(x) && (!is.null(dim(x)) || length(x) != 1L)) {
    return(as_numpy_array(x))
  }
  reticulate::r_to_py(x)
}
