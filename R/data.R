#' Window averages of a signal, cut into sliding sequences
#'
#' The walkthrough's pre-processing step: averages consecutive windows of
#' `window_size_avg` samples (dropping a trailing partial window), then cuts
#' the averaged signal into all sequences of `num_timesteps` consecutive steps
#' (shift 1), as the walkthrough's `dataset_window()` pipeline does.
#'
#' @param data The signal (no default): a numeric vector (one feature) or
#'   matrix (samples x features) of finite values, or a Python array or tensor.
#' @param window_size_avg Samples per averaging window, a whole number >= 1
#'   and at most the number of samples (no default). For a signal sampled at
#'   `f` Hz, `2 * f` gives one value per 2 s, the label rate of PPG-DaLiA.
#' @param num_timesteps Averaged steps per sequence, a whole number >= 1 and at
#'   most the number of windows (no default).
#'
#' @return A Python `tf.data.Dataset` of float32 tensors of shape
#'   `(num_timesteps, features)`, one per start step, in order.
#' @export
#' @examplesIf pydp_r_available()
#' acc <- matrix(rnorm(64 * 20 * 3), ncol = 3)  # 20 windows of 32 Hz x 2 s
#' sequences <- average_and_make_sequences(acc, 64, 12)
#' sequences$cardinality()
average_and_make_sequences <- function(data, window_size_avg, num_timesteps) {
  if (!inherits(data, "python.builtin.object")) {
    check_signal(data, "data")
  }
  check_count(window_size_avg, "window_size_avg")
  check_count(num_timesteps, "num_timesteps")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("window_size_avg", "num_timesteps"))
  if (!inherits(data, "python.builtin.object")) {
    args$data <- as_numpy_array(data)
  }
  call_core("average_and_make_sequences", args, frame_call(environment()),
            submodule = "data")
}

#' Load one PPG-DaLiA subject
#'
#' Reads a subject file such as `PPG_FieldStudy/S1/S1.pkl` of the PPG-DaLiA
#' data set (a Python pickle; unpickling runs code named in the file, so load
#' only files you trust).
#'
#' @param path Path to the subject's `.pkl` file, a string (no default).
#'
#' @return A named list: `signal` (`wrist`: `ACC` (n x 3, 32 Hz), `BVP`
#'   (64 Hz), `EDA` and `TEMP` (4 Hz) as matrices; `chest`: the 700 Hz chest
#'   signals, or an empty list), `label` (heart rate in bpm, one per 2 s),
#'   `activity`, `questionnaire`, `rpeaks` and `subject`.
#' @seealso [synthetic_ppg_subject()] for a stand-in with the same layout,
#'   [heart_rate_datasets()] to turn a subject into training and test sets.
#' @export
#' @examplesIf pydp_r_available() && file.exists("S1.pkl")
#' s1 <- load_ppg_dalia_subject("S1.pkl")
#' nrow(s1$signal$wrist$ACC)
load_ppg_dalia_subject <- function(path) {
  check_string(path, "path")
  path <- path.expand(path)
  if (!file.exists(path) || dir.exists(path)) {
    argument_error("path", "the path of an existing file", path,
                   frame_call(environment()))
  }
  subject <- call_core("load_ppg_dalia_subject", list(path = path),
                       frame_call(environment()), submodule = "data",
                       convert = FALSE)
  python_to_r(subject)
}

#' A synthetic PPG-DaLiA subject
#'
#' Simulates one subject with the layout, sampling rates and types of the
#' PPG-DaLiA data set, following its activity protocol, so that the heart-rate
#' workflow runs without the real data. The heart rate drives the wrist
#' signals in ways that survive 2 s averaging, so a small convnet can learn it;
#' it is a test bed, not a physiological model.
#'
#' @param n_labels Number of heart-rate labels (one per 2 s), a whole
#'   number >= 1. Defaults to `4603`, as for subject S1.
#' @param seed Random seed, a whole number >= 0. Defaults to `0`; the same seed
#'   gives the same subject.
#' @param name `NULL` (default: `"S<seed>"`) or a string, the `subject` entry.
#' @param include_chest Whether to simulate the 700 Hz chest signals. Defaults
#'   to `TRUE`.
#' @param chest_seconds Seconds of chest signals to simulate, a number > 0, or
#'   `NULL` for the whole recording (slow and large). Defaults to `60`.
#' @param motion_artifact_scale Multiplier of the motion artefacts in the BVP,
#'   a number >= 0 (0 gives a clean signal). Defaults to `1`.
#'
#' @return A named list with the layout described in
#'   [load_ppg_dalia_subject()].
#' @export
#' @examplesIf pydp_r_available()
#' s1 <- synthetic_ppg_subject(n_labels = 200, include_chest = FALSE)
#' dim(s1$signal$wrist$ACC)
#' length(s1$label)
synthetic_ppg_subject <- function(n_labels = 4603, seed = 0, name = NULL,
                                  include_chest = TRUE, chest_seconds = 60,
                                  motion_artifact_scale = 1) {
  check_count(n_labels, "n_labels")
  check_count(seed, "seed", min = 0)
  check_string(name, "name", null_ok = TRUE)
  check_flag(include_chest, "include_chest")
  check_number(chest_seconds, "chest_seconds", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, null_ok = TRUE)
  check_number(motion_artifact_scale, "motion_artifact_scale", min = 0,
               max = Inf, max_open = TRUE)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("n_labels", "seed"))
  subject <- call_core("synthetic_ppg_subject", args, frame_call(environment()),
                       submodule = "data", convert = FALSE)
  python_to_r(subject)
}

#' Training and test datasets of one subject, as in the walkthrough
#'
#' Builds the walkthrough's batched datasets for one subject: the 2 s means of
#' the wrist signals (ACC x, y, z, BVP, EDA, TEMP) cut into sequences of
#' `num_timesteps` steps, each labelled with the heart rate of its last step;
#' labels before `train_max` train, the rest test, with no sequence crossing
#' the split.
#'
#' @param subject The subject (no default): the list returned by
#'   [load_ppg_dalia_subject()] or [synthetic_ppg_subject()], a Python dict
#'   with that layout, or the path of a subject's `.pkl` file.
#' @param train_max First label of the test part, a whole number in
#'   \[`num_timesteps`, number of labels - `num_timesteps`\]. Defaults to
#'   `4000`.
#' @param num_timesteps Steps (2 s each) per sequence, a whole number >= 1.
#'   Defaults to `12`.
#' @param batch_size Sequences per batch, a whole number >= 1. Defaults to
#'   `32`.
#' @param shuffle Whether to shuffle the training sequences (anew each epoch).
#'   Defaults to `TRUE`. The test set is never shuffled.
#' @param seed `NULL` (default: a different order each run) or the shuffle
#'   seed, a whole number >= 0.
#' @param standardize Whether to standardize the features with the training
#'   part's means and standard deviations. Defaults to `FALSE`.
#' @param drop_remainder Whether the training set drops its last partial batch
#'   (needed when `num_microbatches` must divide every batch). Defaults to
#'   `FALSE`.
#'
#' @return A list of two Python `tf.data.Dataset` objects, `train` and `test`,
#'   yielding `(x, y)` batches: x float32 `(batch, num_timesteps, 6)`, y float32
#'   `(batch, 1)` in bpm. Neither repeats; `fit()` runs the epochs.
#' @export
#' @examplesIf pydp_r_available()
#' s1 <- synthetic_ppg_subject(n_labels = 300, include_chest = FALSE)
#' datasets <- heart_rate_datasets(s1, train_max = 250, seed = 1)
#' datasets$train$element_spec
heart_rate_datasets <- function(subject, train_max = 4000, num_timesteps = 12,
                                batch_size = 32, shuffle = TRUE, seed = NULL,
                                standardize = FALSE, drop_remainder = FALSE) {
  check_subject(subject)
  check_count(train_max, "train_max")
  check_count(num_timesteps, "num_timesteps")
  check_count(batch_size, "batch_size")
  check_flag(shuffle, "shuffle")
  check_count(seed, "seed", min = 0, null_ok = TRUE)
  check_flag(standardize, "standardize")
  check_flag(drop_remainder, "drop_remainder")
  args <- supplied_args(
    match.call(expand.dots = FALSE), environment(),
    integers = c("train_max", "num_timesteps", "batch_size", "seed")
  )
  args$subject <- subject_for_python(subject)
  datasets <- call_core("heart_rate_datasets", args, frame_call(environment()),
                        submodule = "data")
  names(datasets) <- c("train", "test")
  datasets
}

check_signal <- function(x, arg, call = frame_call(parent.frame())) {
  ok <- is.numeric(x) && length(x) >= 1L &&
    (is.null(dim(x)) || length(dim(x)) <= 2L) && all(is.finite(x))
  if (!ok) {
    argument_error(
      arg, "a numeric vector or matrix of finite values, or a Python array",
      x, call
    )
  }
}

check_subject <- function(x, call = frame_call(parent.frame())) {
  is_path <- is.character(x) && length(x) == 1L && !is.na(x) &&
    file.exists(path.expand(x)) && !dir.exists(path.expand(x))
  is_subject_list <- is.list(x) && !is.null(names(x)) &&
    all(c("signal", "label") %in% names(x))
  if (!(is_path || is_subject_list || inherits(x, "python.builtin.object"))) {
    argument_error(
      "subject",
      paste("a subject list (with entries signal and label), a Python dict,",
            "or the path of an existing subject file"),
      x, call
    )
  }
}

#' The walkthrough's training and test sequences of one subject, as R arrays
#'
#' The arrays behind [heart_rate_datasets()]: the 2 s means of the wrist
#' signals (ACC x, y, z, BVP, EDA, TEMP) cut into sequences of `num_timesteps`
#' steps, each labelled with the heart rate of its last step; labels before
#' `train_max` train, the rest test, with no sequence crossing the split. They
#' go straight into `model$fit()`, `model$predict()` and [poisson_batches()].
#'
#' @inheritParams heart_rate_datasets
#' @param with_user_ids Whether to add the user id of every sequence (the
#'   subject's `subject` entry), for user-level accounting. Defaults to
#'   `FALSE`.
#'
#' @return A named list of R arrays: `x_train` and `x_test` of dimensions
#'   `c(n, num_timesteps, 6)`, `y_train` and `y_test` of dimensions `c(n, 1)`
#'   (heart rate in bpm; matrices, not vectors, because Keras refuses the
#'   Python list a plain R vector becomes). For subject S1 (and the default
#'   synthetic subject) `n` is 3989 for training and 592 for test. With
#'   `with_user_ids`, also `user_ids_train` and `user_ids_test`, character
#'   vectors of length `n`.
#' @export
#' @examplesIf pydp_r_available()
#' s1 <- synthetic_ppg_subject(n_labels = 300, include_chest = FALSE)
#' arrays <- heart_rate_arrays(s1, train_max = 250)
#' dim(arrays$x_train)
heart_rate_arrays <- function(subject, train_max = 4000, num_timesteps = 12,
                              standardize = FALSE, with_user_ids = FALSE) {
  check_subject(subject)
  check_count(train_max, "train_max")
  check_count(num_timesteps, "num_timesteps")
  check_flag(standardize, "standardize")
  check_flag(with_user_ids, "with_user_ids")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("train_max", "num_timesteps"))
  args$subject <- subject_for_python(subject)
  arrays <- call_core("heart_rate_arrays", args, frame_call(environment()),
                      submodule = "data", convert = FALSE)
  arrays <- python_to_r(arrays)
  if (with_user_ids) {
    names(arrays) <- c("x_train", "y_train", "x_test", "y_test",
                       "user_ids_train", "user_ids_test")
    arrays$user_ids_train <- as.vector(arrays$user_ids_train)
    arrays$user_ids_test <- as.vector(arrays$user_ids_test)
    return(arrays)
  }
  names(arrays) <- c("x_train", "y_train", "x_test", "y_test")
  arrays
}

#' Poisson-sampled batches for DP training
#'
#' The batches that make [compute_epsilon()] exact for what ran: each batch
#' includes each of the `n` examples independently with probability
#' `sampling_rate`, then is padded with examples of sample weight 0 to one fixed
#' size, `max_batch_size`, so that Keras traces its training step once. Every
#' epoch of `fit()` draws fresh batches. Give the result to `model$fit()` in
#' place of `x` and `y` (and no `batch_size`); [callback_privacy_budget()]
#' recognizes these batches and logs the Poisson-sampling epsilon. A thin
#' wrapper of the Python `pydp_r.data.poisson_batches()`.
#'
#' @param data The training data (no default): `list(x = , y = )` or
#'   `list(x, y)`, optionally with a third element `sample_weight`. `x` and `y`
#'   are R arrays (or NumPy arrays) with the same first dimension `n`; a plain
#'   vector `y` is taken as a 1-D array.
#' @param sampling_rate Probability that a batch includes a given example, a
#'   number in (0, 1] (no default). For the accounting, the batch size is
#'   `sampling_rate * n`.
#' @param max_batch_size `NULL` (default: a size exceeded with probability at
#'   most 1e-6 per batch) or the fixed batch dimension, a whole number in
#'   \[1, `n`\].
#' @param seed `NULL` (default: fresh randomness) or a whole number >= 0 that
#'   makes the batches of every epoch reproducible.
#' @param steps `NULL` (default: `1 / sampling_rate`, rounded down, one epoch)
#'   or the number of batches per epoch, a whole number >= 1.
#' @param user_ids `NULL` (default: the privacy unit is the example) or one id
#'   per example, a character or integer vector of length `n` without `NA`
#'   (e.g. the `user_ids` of [heart_rate_sequences()]), for user-level DP:
#'   each batch then includes each *user* with probability `sampling_rate`,
#'   each sampled user brings up to `max_examples_per_user` of their examples
#'   as one block that the DP optimizers clip as one unit, and
#'   [callback_privacy_budget()] logs the epsilon per user. `sampling_rate`
#'   and `max_batch_size` then count users.
#' @param max_examples_per_user `NULL` (default) or, with `user_ids` (where it
#'   is required), the most examples one user brings to a batch, a whole number
#'   >= 1; a batch has `max_batch_size * max_examples_per_user` rows.
#'
#' @return A Python `tf.data.Dataset` of `(x, y, sample_weight)` batches.
#' @seealso [synthetic_ppg_population()] and [heart_rate_sequences()] for data
#'   with user ids.
#' @export
#' @examplesIf pydp_r_available()
#' x <- matrix(rnorm(300), ncol = 3)
#' y <- matrix(rnorm(100), ncol = 1)
#' batches <- poisson_batches(list(x = x, y = y), sampling_rate = 0.1, seed = 1)
#' batches$cardinality()
#' # Per user: 20 users with 5 examples each, 4 of them per sampled user.
#' users <- rep(sprintf("user%02d", 1:20), each = 5)
#' per_user <- poisson_batches(list(x = x, y = y), sampling_rate = 0.25,
#'                             user_ids = users, max_examples_per_user = 4,
#'                             seed = 1)
#' per_user$cardinality()
poisson_batches <- function(data, sampling_rate, max_batch_size = NULL,
                            seed = NULL, steps = NULL, user_ids = NULL,
                            max_examples_per_user = NULL) {
  check_training_data(data)
  check_number(sampling_rate, "sampling_rate", min = 0, max = 1,
               min_open = TRUE)
  check_count(max_batch_size, "max_batch_size", null_ok = TRUE)
  check_count(seed, "seed", min = 0, null_ok = TRUE)
  check_count(steps, "steps", null_ok = TRUE)
  check_user_ids(user_ids)
  check_count(max_examples_per_user, "max_examples_per_user", null_ok = TRUE)
  if (!is.null(user_ids) && is.null(max_examples_per_user)) {
    argument_error("max_examples_per_user",
                   "a whole number >= 1 when user_ids is given",
                   max_examples_per_user, frame_call(environment()))
  }
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("max_batch_size", "seed", "steps",
                                     "max_examples_per_user"))
  args$data <- training_data_for_python(data)
  if (!is.null(user_ids)) {
    args$user_ids <- as_numpy_array(user_ids_for_python(user_ids))
  }
  call_core("poisson_batches", args, frame_call(environment()),
            submodule = "data")
}

#' User-level Poisson batches sampled by each worker from its own users
#'
#' For `model$fit()` under a multi-worker `tf$distribute` strategy, one replica
#' per worker (e.g. `MultiWorkerMirroredStrategy` with one device per worker):
#' a hash of each user's id picks the worker (shard) that holds the user, and
#' each worker draws its own users' batches as [poisson_batches()] does with
#' `user_ids`. A step then includes every user independently with probability
#' `sampling_rate`; each user's rows are on one replica, clipped as one unit,
#' and the noise is added once. [callback_privacy_budget()] logs the epsilon
#' per user: each shard's truncated Poisson mechanism composed, the worst
#' shard's. On a cluster every worker runs the same script on the same data
#' (all user ids are needed to size the shards) with `TF_CONFIG` naming the
#' cluster. A thin wrapper of the Python
#' `pydp_r.data.distributed_poisson_batches()`.
#'
#' @param strategy The `tf$distribute` strategy the model was built under, with
#'   one replica per worker (the default strategy gives one shard: the batches
#'   of [poisson_batches()]).
#' @inheritParams poisson_batches
#' @param sampling_rate Probability that a step includes a given user, a number
#'   in (0, 1] (no default).
#' @param user_ids One id per example (no default), a character or integer
#'   vector of length `n` without `NA`, the same on every worker.
#' @param max_examples_per_user The most examples one user brings to a step, a
#'   whole number >= 1 (no default).
#' @param max_batch_size `NULL` (default: exceeded with probability at most
#'   1e-6 in the largest shard) or the users per replica's batch, a whole number
#'   in \[`sampling_rate` times the largest shard's users, that number of users\].
#'
#' @return What `strategy$distribute_datasets_from_function()` returns, carrying
#'   the sampling for the privacy ledger: give it to `model$fit()`.
#' @seealso [poisson_batches()] for one worker, or for `MirroredStrategy`, which
#'   splits its batches between replicas.
#' @export
#' @examplesIf pydp_r_available()
#' x <- matrix(rnorm(300), ncol = 3)
#' y <- matrix(rnorm(100), ncol = 1)
#' users <- rep(sprintf("user%02d", 1:20), each = 5)
#' tf <- reticulate::import("tensorflow")
#' batches <- distributed_poisson_batches(tf$distribute$get_strategy(),
#'                                        list(x = x, y = y), sampling_rate = 0.25,
#'                                        user_ids = users,
#'                                        max_examples_per_user = 4, seed = 1)
#' batches$pydp_r_poisson_sampling$n
distributed_poisson_batches <- function(strategy, data, sampling_rate, user_ids,
                                        max_examples_per_user,
                                        max_batch_size = NULL, seed = NULL,
                                        steps = NULL) {
  check_training_data(data)
  check_number(sampling_rate, "sampling_rate", min = 0, max = 1,
               min_open = TRUE)
  if (missing(user_ids) || is.null(user_ids)) {
    argument_error("user_ids", "one id per example", NULL,
                   frame_call(environment()))
  }
  check_user_ids(user_ids)
  check_count(max_examples_per_user, "max_examples_per_user")
  check_count(max_batch_size, "max_batch_size", null_ok = TRUE)
  check_count(seed, "seed", min = 0, null_ok = TRUE)
  check_count(steps, "steps", null_ok = TRUE)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("max_batch_size", "seed", "steps",
                                     "max_examples_per_user"))
  args$data <- training_data_for_python(data)
  args$user_ids <- as_numpy_array(user_ids_for_python(user_ids))
  call_core("distributed_poisson_batches", args, frame_call(environment()),
            submodule = "data")
}

check_user_ids <- function(x, call = frame_call(parent.frame())) {
  if (is.null(x)) {
    return(invisible(x))
  }
  ok <- (is.character(x) || is.numeric(x) || is.factor(x)) &&
    is.null(dim(x)) && length(x) >= 1L && !anyNA(x)
  if (is.numeric(x) && ok) {
    ok <- all(is.finite(x)) && all(x == trunc(x)) &&
      all(abs(x) <= .Machine$integer.max)
  }
  if (!ok) {
    argument_error("user_ids",
                   "NULL or a character or integer vector, one id per example, no NA",
                   x, call)
  }
  invisible(x)
}

# Factors go as their labels, whole numbers as integers (not floats).
user_ids_for_python <- function(ids) {
  if (is.factor(ids)) {
    return(as.character(ids))
  }
  if (is.numeric(ids)) {
    return(as.integer(ids))
  }
  ids
}

check_training_data <- function(x, call = frame_call(parent.frame())) {
  what <- paste(
    "list(x = , y = ) or list(x, y), optionally with sample_weight,",
    "of arrays with one row per example"
  )
  if (!is.list(x) || !(length(x) %in% c(2L, 3L))) {
    argument_error("data", what, x, call)
  }
  if (!is.null(names(x))) {
    given <- names(x)
    if (!all(c("x", "y") %in% given) ||
        !all(given %in% c("x", "y", "sample_weight"))) {
      argument_error("data", what, x, call)
    }
  }
}

# list(x = , y = ) becomes a dict, list(x, y) a tuple; vectors become 1-D
# arrays (not the Python lists reticulate makes of them).
training_data_for_python <- function(data) {
  parts <- lapply(data, function(part) {
    if (is.atomic(part) && !is.null(part)) as_numpy_array(part) else r_to_python(part)
  })
  if (is.null(names(data))) {
    return(do.call(reticulate::tuple, unname(parts)))
  }
  reticulate::py_dict(as.list(names(parts)), unname(parts), convert = FALSE)
}

subject_for_python <- function(subject) {
  if (is.character(subject)) path.expand(subject) else r_to_python(subject)
}

#' A synthetic population of wearers, each in the PPG-DaLiA layout
#'
#' Simulates `n_users` people who differ as people do: resting heart rate
#' (lower for those who train), fitness, PPG pulse amplitude (lower for darker
#' skin), perfusion, activity mix, order and durations, and recording length.
#' Each is a subject with the layout of [synthetic_ppg_subject()] and its own
#' id in `subject` (`"P<seed>-<i>"`), the data that user-level privacy is
#' about. Person `i` depends only on `seed` and `i`, so a smaller population
#' is the start of a larger one. Without chest signals a person takes about
#' 25 ms and 2.3 MB at the default lengths (1,000 people: about 25 s and
#' 2.3 GB in Python; converting them to R lists costs as much memory again).
#'
#' @param n_users Number of people, a whole number >= 1 (no default).
#' @param seed Random seed of the population, a whole number >= 0. Defaults to
#'   `0`.
#' @param n_labels_range Shortest and longest recording in heart-rate labels
#'   (one per 2 s), two whole numbers with 1 <= shortest <= longest; lengths
#'   are drawn log-uniformly between them. Defaults to `c(300, 1800)` (10 to
#'   60 minutes).
#' @param include_chest Whether to simulate the 700 Hz chest signals. Defaults
#'   to `FALSE`.
#' @param chest_seconds Seconds of chest signals to simulate, a number > 0, or
#'   `NULL` for the whole recording. Defaults to `60`.
#' @param motion_artifact_scale Multiplier of the motion artefacts in the BVP,
#'   a number >= 0. Defaults to `1`.
#'
#' @return A list of `n_users` subjects (named lists as returned by
#'   [synthetic_ppg_subject()]), person `i` at position `i`.
#' @seealso [heart_rate_sequences()] for their sequences with user ids,
#'   [leave_subjects_out()] and [subject_folds()] to split them by person.
#' @export
#' @examplesIf pydp_r_available()
#' people <- synthetic_ppg_population(3, seed = 1, n_labels_range = c(100, 200))
#' vapply(people, function(person) person$subject, "")
#' vapply(people, function(person) length(person$label), 1L)
synthetic_ppg_population <- function(n_users, seed = 0,
                                     n_labels_range = c(300, 1800),
                                     include_chest = FALSE, chest_seconds = 60,
                                     motion_artifact_scale = 1) {
  check_count(n_users, "n_users")
  check_count(seed, "seed", min = 0)
  check_n_labels_range(n_labels_range)
  check_flag(include_chest, "include_chest")
  check_number(chest_seconds, "chest_seconds", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, null_ok = TRUE)
  check_number(motion_artifact_scale, "motion_artifact_scale", min = 0,
               max = Inf, max_open = TRUE)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("n_users", "seed"))
  if (!is.null(args$n_labels_range)) {
    args$n_labels_range <- do.call(reticulate::tuple,
                                   as.list(as.integer(n_labels_range)))
  }
  people <- call_core("synthetic_ppg_population", args,
                      frame_call(environment()), submodule = "data",
                      convert = FALSE)
  python_to_r(people)
}

check_n_labels_range <- function(x, call = frame_call(parent.frame())) {
  ok <- is.numeric(x) && length(x) == 2L && all(is.finite(x)) &&
    all(x == trunc(x)) && x[[1]] >= 1 && x[[1]] <= x[[2]]
  if (!ok) {
    argument_error(
      "n_labels_range",
      "two whole numbers c(shortest, longest) with 1 <= shortest <= longest",
      x, call
    )
  }
}

#' Load several PPG-DaLiA subjects, each under its id
#'
#' Reads the subjects S1-S15 of the PPG-DaLiA data set (or those named in
#' `subjects`) one file at a time. Without `include_chest` each subject's
#' 700 Hz chest signals are dropped as soon as it is read, so the 15 real
#' subjects hold about 0.2 GB. Unpickling runs code named in the files: load
#' only files you trust.
#'
#' @param data_dir The unpacked data set (holding `PPG_FieldStudy/`), or a
#'   folder of `S*/S*.pkl` or `S*.pkl` files, a string (no default).
#' @param subjects `NULL` (default: every subject found) or the ids to load, a
#'   character vector such as `c("S1", "S2")` (file names without `.pkl`).
#' @param include_chest Whether to keep the chest signals. Defaults to `FALSE`
#'   (`signal$chest` is then an empty list).
#'
#' @return A named list from subject id to subject (as returned by
#'   [load_ppg_dalia_subject()]), in subject-number order (S2 before S10) or
#'   the order of `subjects`; each subject's `subject` entry is its id.
#' @seealso [leave_subjects_out()] and [subject_folds()] to split by person,
#'   [heart_rate_sequences()] for sequences with user ids.
#' @export
#' @examplesIf pydp_r_available() && dir.exists("PPG_FieldStudy")
#' subjects <- load_ppg_dalia_subjects(".", c("S1", "S2"))
#' names(subjects)
load_ppg_dalia_subjects <- function(data_dir, subjects = NULL,
                                    include_chest = FALSE) {
  check_string(data_dir, "data_dir")
  data_dir <- path.expand(data_dir)
  if (!dir.exists(data_dir)) {
    argument_error("data_dir", "the path of an existing folder", data_dir,
                   frame_call(environment()))
  }
  if (!is.null(subjects)) {
    check_subject_ids(subjects, "subjects")
  }
  check_flag(include_chest, "include_chest")
  args <- supplied_args(match.call(expand.dots = FALSE), environment())
  args$data_dir <- data_dir
  if (!is.null(subjects)) {
    args$subjects <- ids_for_python(subjects)
  }
  loaded <- call_core("load_ppg_dalia_subjects", args,
                      frame_call(environment()), submodule = "data",
                      convert = FALSE)
  python_to_r(loaded)
}

#' Split subjects by person: hold some out for testing
#'
#' Whole subjects go to training or to testing, never both, so that test error
#' and membership tests speak about people.
#'
#' @param subject_ids All subject ids (no default): a character vector of
#'   distinct non-empty strings, or a named list of subjects (as returned by
#'   [load_ppg_dalia_subjects()]), whose names are the ids.
#' @param test_subjects The ids to hold out (no default), a character vector,
#'   each in `subject_ids`, at least one and fewer than all.
#'
#' @return A list of two character vectors, `train` and `test`, each in the
#'   order of `subject_ids`.
#' @export
#' @examplesIf pydp_r_available()
#' leave_subjects_out(paste0("S", 1:15), test_subjects = c("S1", "S2"))
leave_subjects_out <- function(subject_ids, test_subjects) {
  subject_ids <- subject_ids_of(subject_ids)
  check_subject_ids(test_subjects, "test_subjects")
  split <- call_core(
    "leave_subjects_out",
    list(subject_ids = ids_for_python(subject_ids),
         test_subjects = ids_for_python(test_subjects)),
    frame_call(environment()), submodule = "data"
  )
  list(train = as.character(unlist(split[[1]])),
       test = as.character(unlist(split[[2]])))
}

#' K-fold cross-validation by subject
#'
#' Assigns every subject to exactly one test fold; each fold trains on the
#' other subjects.
#'
#' @inheritParams leave_subjects_out
#' @param n_folds Number of folds, a whole number in \[2, number of subjects\]
#'   (no default); as many folds as subjects is leave-one-subject-out.
#' @param seed `NULL` (default: folds of consecutive subjects in the given
#'   order) or a whole number >= 0 that assigns subjects to folds at random,
#'   reproducibly.
#'
#' @return A list of `n_folds` lists, each with character vectors `train` and
#'   `test` in the order of `subject_ids`; test folds differ in size by at most
#'   one subject.
#' @export
#' @examplesIf pydp_r_available()
#' folds <- subject_folds(paste0("S", 1:15), n_folds = 5, seed = 1)
#' folds[[1]]$test
subject_folds <- function(subject_ids, n_folds, seed = NULL) {
  subject_ids <- subject_ids_of(subject_ids)
  check_count(n_folds, "n_folds", min = 2)
  check_count(seed, "seed", min = 0, null_ok = TRUE)
  args <- list(subject_ids = ids_for_python(subject_ids),
               n_folds = as_python_integer(n_folds))
  if (!is.null(seed)) {
    args$seed <- as_python_integer(seed)
  }
  folds <- call_core("subject_folds", args, frame_call(environment()),
                     submodule = "data")
  lapply(folds, function(fold) {
    list(train = as.character(unlist(fold[[1]])),
         test = as.character(unlist(fold[[2]])))
  })
}

#' Sequences of several subjects, each with its user id
#'
#' Every sequence of every subject (each cut on its own, so none crosses two
#' subjects, and every label from `num_timesteps` on is used) with the id of
#' the person it came from: what user-level accounting and splits by person
#' need. Features are not standardized.
#'
#' @param subjects The subjects (no default): a named list from id to subject
#'   (as returned by [load_ppg_dalia_subjects()]), or an unnamed list of
#'   subjects (as returned by [synthetic_ppg_population()]; each one's
#'   `subject` entry is its id), or a character vector of subject file paths.
#' @param num_timesteps Steps (2 s each) per sequence, a whole number >= 1 and
#'   at most every subject's number of labels. Defaults to `12`.
#'
#' @return A named list: `x` (an array of dimensions `c(n, num_timesteps, 6)`),
#'   `y` (heart rate in bpm, `c(n, 1)`) and `user_ids` (a character vector of
#'   length `n`), subjects in the given order.
#' @export
#' @examplesIf pydp_r_available()
#' people <- synthetic_ppg_population(3, seed = 1, n_labels_range = c(50, 80))
#' sequences <- heart_rate_sequences(people)
#' table(sequences$user_ids)
heart_rate_sequences <- function(subjects, num_timesteps = 12) {
  check_subjects(subjects)
  check_count(num_timesteps, "num_timesteps")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = "num_timesteps")
  args$subjects <- subjects_for_python(subjects)
  arrays <- call_core("heart_rate_sequences", args, frame_call(environment()),
                      submodule = "data", convert = FALSE)
  arrays <- python_to_r(arrays)
  list(x = arrays[[1]], y = arrays[[2]], user_ids = as.vector(arrays[[3]]))
}

check_subject_ids <- function(x, arg, call = frame_call(parent.frame())) {
  if (!(is.character(x) && length(x) >= 1L && !anyNA(x) && all(nzchar(x)))) {
    argument_error(arg, "a character vector of non-empty strings", x, call)
  }
  invisible(x)
}

# A named list of subjects stands for its names.
subject_ids_of <- function(x, call = frame_call(parent.frame())) {
  if (is.list(x) && !is.null(names(x))) {
    x <- names(x)
  }
  check_subject_ids(x, "subject_ids", call)
  x
}

# Always a Python list: a single R string would arrive as a bare str.
ids_for_python <- function(ids) {
  reticulate::r_to_py(as.list(ids))
}

check_subjects <- function(x, call = frame_call(parent.frame())) {
  is_paths <- is.character(x) && length(x) >= 1L && !anyNA(x)
  is_list <- is.list(x) && length(x) >= 1L
  if (!(is_paths || is_list || inherits(x, "python.builtin.object"))) {
    argument_error(
      "subjects",
      paste("a named or unnamed list of subjects, or a character vector of",
            "subject file paths"),
      x, call
    )
  }
}

subjects_for_python <- function(subjects) {
  if (inherits(subjects, "python.builtin.object")) {
    return(subjects)
  }
  if (is.character(subjects)) {
    return(reticulate::r_to_py(as.list(path.expand(subjects))))
  }
  converted <- lapply(subjects, subject_for_python)
  if (is.null(names(subjects))) {
    return(reticulate::r_to_py(unname(converted)))
  }
  reticulate::py_dict(as.list(names(subjects)), unname(converted),
                      convert = FALSE)
}
