# Window means then all sequences of `num_timesteps` rows, computed in plain R.
expected_sequences <- function(data, window_size_avg, num_timesteps) {
  data <- as.matrix(data)
  windows <- nrow(data) %/% window_size_avg
  averaged <- t(vapply(seq_len(windows), function(i) {
    rows <- ((i - 1) * window_size_avg + 1):(i * window_size_avg)
    colMeans(data[rows, , drop = FALSE])
  }, numeric(ncol(data))))
  if (ncol(data) == 1L) averaged <- t(averaged)
  starts <- seq_len(windows - num_timesteps + 1)
  out <- array(0, dim = c(length(starts), num_timesteps, ncol(data)))
  for (s in starts) out[s, , ] <- averaged[s:(s + num_timesteps - 1), ]
  out
}

dataset_as_array <- function(dataset) {
  as_r_array(reticulate::iter_next(reticulate::as_iterator(dataset$batch(100000L))))
}

first_batch <- function(dataset) {
  reticulate::iter_next(reticulate::as_iterator(dataset))
}

batch_rows <- function(dataset) {
  unlist(reticulate::iterate(dataset, function(batch) nrow(as_r_array(batch[[2]]))))
}

test_that("bad data arguments fail in R, naming the argument", {
  expect_error(average_and_make_sequences("signal", 64, 12),
               "`data` must be a numeric vector or matrix")
  expect_error(average_and_make_sequences(c(1, NA, 3), 1, 1), "`data`")
  expect_error(average_and_make_sequences(array(0, c(2, 2, 2)), 1, 1), "`data`")
  expect_error(average_and_make_sequences(1:10, 0, 1), "`window_size_avg`")
  expect_error(average_and_make_sequences(1:10, 2, 1.5), "`num_timesteps`")
  expect_error(load_ppg_dalia_subject(1), "`path` must be a single")
  expect_error(load_ppg_dalia_subject(file.path(tempdir(), "no-such-S1.pkl")),
               "`path` must be the path of an existing file")
  expect_error(load_ppg_dalia_subject(tempdir()), "`path`")
  expect_error(synthetic_ppg_subject(n_labels = 0), "`n_labels`")
  expect_error(synthetic_ppg_subject(seed = -1), "`seed` must be a whole number >= 0")
  expect_error(synthetic_ppg_subject(name = ""), "`name`")
  expect_error(synthetic_ppg_subject(include_chest = "no"), "`include_chest`")
  expect_error(synthetic_ppg_subject(chest_seconds = 0), "`chest_seconds`")
  expect_error(synthetic_ppg_subject(motion_artifact_scale = -1),
               "`motion_artifact_scale`")
  expect_error(heart_rate_datasets(42), "`subject` must be a subject list")
  expect_error(heart_rate_datasets(file.path(tempdir(), "no-such.pkl")), "`subject`")
  expect_error(heart_rate_datasets(list(a = 1)), "`subject`")
  subject <- list(signal = list(), label = 1:10)
  expect_error(heart_rate_datasets(subject, train_max = 0), "`train_max`")
  expect_error(heart_rate_datasets(subject, num_timesteps = -2), "`num_timesteps`")
  expect_error(heart_rate_datasets(subject, batch_size = 1.5), "`batch_size`")
  expect_error(heart_rate_datasets(subject, shuffle = NA), "`shuffle`")
  expect_error(heart_rate_datasets(subject, seed = -1), "`seed`")
  expect_error(heart_rate_datasets(subject, standardize = 1), "`standardize`")
  expect_error(heart_rate_datasets(subject, drop_remainder = "yes"),
               "`drop_remainder`")
})

test_that("average_and_make_sequences() on an R matrix matches the averages computed in R", {
  skip_if_no_core()
  set.seed(7)
  acc <- matrix(rnorm((64 * 20 + 10) * 3), ncol = 3)  # 10 rows past the last window
  # 64 and 12 are R doubles; Python wants integers.
  sequences <- average_and_make_sequences(acc, 64, 12)
  expect_identical(as.integer(as_r_array(sequences$cardinality())), 9L)
  expect_equal(dataset_as_array(sequences), expected_sequences(acc, 64, 12),
               tolerance = 1e-6)
})

test_that("a numeric vector is one feature", {
  skip_if_no_core()
  set.seed(8)
  bvp <- rnorm(128 * 15)
  values <- dataset_as_array(average_and_make_sequences(bvp, 128, 12))
  expect_identical(dim(values), c(4L, 12L, 1L))
  expect_equal(values, expected_sequences(bvp, 128, 12), tolerance = 1e-6)
})

test_that("too few windows for a sequence is Python's ValueError, with its message", {
  skip_if_no_core()
  error <- expect_error(average_and_make_sequences(rnorm(64 * 5), 64, 12),
                        class = "pydpr_python_error")
  expect_match(conditionMessage(error), "ValueError: num_timesteps must be at most")
})

test_that("synthetic_ppg_subject() with its defaults is subject S1's size", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject()
  expect_length(subject$label, 4603L)
  expect_identical(nrow(subject$signal$wrist$ACC), (2L * 4602L + 8L) * 32L)
  expect_identical(nrow(subject$signal$chest$ECG), 60L * 700L)
  expect_identical(subject$subject, "S0")
})

test_that("synthetic_ppg_subject() has PPG-DaLiA's layout and equals Python's", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject(n_labels = 200, seed = 3, include_chest = FALSE)
  seconds <- as.integer(2 * (200 - 1) + 8)
  expect_identical(dim(subject$signal$wrist$ACC), c(seconds * 32L, 3L))
  expect_identical(nrow(subject$signal$wrist$BVP), seconds * 64L)
  expect_identical(nrow(subject$signal$wrist$EDA), seconds * 4L)
  expect_identical(nrow(subject$signal$wrist$TEMP), seconds * 4L)
  expect_length(subject$label, 200L)
  expect_length(subject$signal$chest, 0L)
  expect_identical(subject$subject, "S3")
  data_module <- reticulate::import("pydp_r.data", convert = FALSE)
  from_python <- data_module$synthetic_ppg_subject(200L, 3L, include_chest = FALSE)
  expect_identical(subject$label, as_r_array(from_python$get("label")))
  expect_identical(subject$signal$wrist$BVP,
                   as_r_array(from_python$get("signal")$get("wrist")$get("BVP")))
  other_seed <- synthetic_ppg_subject(n_labels = 200, seed = 4, include_chest = FALSE)
  expect_false(identical(subject$label, other_seed$label))
})

test_that("heart_rate_datasets() from an R subject list equals the Python dict's", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject(n_labels = 300, include_chest = FALSE)
  datasets <- heart_rate_datasets(subject, train_max = 250, batch_size = 32,
                                  shuffle = FALSE)
  expect_named(datasets, c("train", "test"))
  expect_identical(sum(batch_rows(datasets$train)), 250L - 12L + 1L)
  expect_identical(sum(batch_rows(datasets$test)), 300L - 250L - 12L + 1L)
  expect_identical(max(batch_rows(datasets$train)), 32L)

  data_module <- reticulate::import("pydp_r.data", convert = FALSE)
  python_subject <- data_module$synthetic_ppg_subject(300L, 0L, include_chest = FALSE)
  from_dict <- heart_rate_datasets(python_subject, train_max = 250, shuffle = FALSE)
  ours <- first_batch(datasets$train)
  theirs <- first_batch(from_dict$train)
  expect_identical(dim(as_r_array(ours[[1]])), c(32L, 12L, 6L))
  expect_identical(as_r_array(ours[[1]]), as_r_array(theirs[[1]]))
  expect_identical(as_r_array(ours[[2]]), as_r_array(theirs[[2]]))
})

test_that("a seeded shuffle repeats, and drop_remainder drops the partial batch", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject(n_labels = 300, include_chest = FALSE)
  first_labels <- function() {
    datasets <- heart_rate_datasets(subject, train_max = 250, seed = 11)
    as_r_array(first_batch(datasets$train)[[2]])
  }
  expect_identical(first_labels(), first_labels())
  dropped <- heart_rate_datasets(subject, train_max = 250, batch_size = 32,
                                 drop_remainder = TRUE)
  expect_true(all(batch_rows(dropped$train) == 32L))
})

test_that("load_ppg_dalia_subject() reads a subject file; heart_rate_datasets() takes its path", {
  skip_if_no_core()
  data_module <- reticulate::import("pydp_r.data", convert = FALSE)
  python_subject <- data_module$synthetic_ppg_subject(300L, 5L, include_chest = FALSE)
  path <- tempfile(fileext = ".pkl")
  on.exit(unlink(path))
  data_module$save_ppg_dalia_subject(python_subject, path)

  loaded <- load_ppg_dalia_subject(path)
  expect_identical(loaded$label, as_r_array(python_subject$get("label")))
  wrist <- python_subject$get("signal")$get("wrist")
  expect_identical(loaded$signal$wrist$ACC, as_r_array(wrist$get("ACC")))
  expect_identical(loaded$subject, "S5")

  from_path <- heart_rate_datasets(path, train_max = 250, shuffle = FALSE)
  from_list <- heart_rate_datasets(loaded, train_max = 250, shuffle = FALSE)
  expect_identical(as_r_array(first_batch(from_path$test)[[1]]),
                   as_r_array(first_batch(from_list$test)[[1]]))
})

test_that("an impossible split is Python's ValueError, with its message", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject(n_labels = 100, include_chest = FALSE)
  error <- expect_error(heart_rate_datasets(subject, train_max = 4000),
                        class = "pydpr_python_error")
  expect_match(conditionMessage(error), "ValueError: train_max must be in")
})

test_that("bad poisson_batches() arguments fail in R, naming the argument", {
  data <- list(x = matrix(0, 10, 2), y = matrix(0, 10, 1))
  expect_error(poisson_batches(matrix(0, 10, 2), 0.1), "`data` must be list(x = , y = )",
               fixed = TRUE)
  expect_error(poisson_batches(list(a = 1, b = 2), 0.1), "`data`")
  expect_error(poisson_batches(list(1), 0.1), "`data`")
  expect_error(poisson_batches(data, 0), "`sampling_rate` must be a number in (0, 1]",
               fixed = TRUE)
  expect_error(poisson_batches(data, 1.5), "`sampling_rate`")
  expect_error(poisson_batches(data, 0.1, max_batch_size = 2.5), "`max_batch_size`")
  expect_error(poisson_batches(data, 0.1, seed = -1), "`seed`")
  expect_error(poisson_batches(data, 0.1, steps = 0), "`steps`")
  expect_error(poisson_batches(data, 0.1, user_ids = c("a", NA, rep("b", 8)),
                               max_examples_per_user = 2), "`user_ids`")
  expect_error(poisson_batches(data, 0.1, user_ids = rep(1.5, 10),
                               max_examples_per_user = 2), "`user_ids`")
  expect_error(poisson_batches(data, 0.1, user_ids = rep("a", 10)),
               "`max_examples_per_user` must be a whole number >= 1 when user_ids",
               fixed = TRUE)
  expect_error(poisson_batches(data, 0.1, user_ids = rep("a", 10),
                               max_examples_per_user = 0), "`max_examples_per_user`")
})

test_that("poisson_batches() takes R user ids; a fit is then accounted per user", {
  skip_if_no_core()
  data <- regression_data(n = 120)
  # 30 users with 4 examples each, in a scrambled order; as characters and as integers.
  set.seed(2)
  users <- sample(rep(1:30, each = 4))
  wearer_names <- sprintf("wearer%02d", users)
  by_name <- poisson_batches(data, sampling_rate = 0.2, user_ids = wearer_names,
                             max_examples_per_user = 3, seed = 5)
  by_number <- poisson_batches(data, sampling_rate = 0.2, user_ids = users,
                               max_examples_per_user = 3, seed = 5)
  sampling <- by_name$pydp_r_poisson_sampling
  expect_identical(sampling$unit, "user")
  expect_identical(sampling$n, 30L)
  expect_identical(sampling$examples_per_unit, 3L)
  first <- function(batches) lapply(first_batch(batches), as_r_array)
  expect_identical(first(by_name), first(by_number))
  # Each block of 3 rows holds one user's examples (or padding).
  batch <- first(by_name)
  owner <- function(row) users[which(apply(data$x, 1, function(r) all(abs(r - row) < 1e-6)))]
  for (block in seq_len(nrow(batch[[1]]) / 3)) {
    rows <- (3 * block - 2):(3 * block)
    real <- rows[batch[[3]][rows] > 0]
    expect_lte(length(unique(unlist(lapply(real, function(r) owner(batch[[1]][r, ]))))), 1L)
  }

  model <- linear_model()
  model$compile(optimizer = optimizer_dp_sgd(l2_norm_clip = 1, noise_multiplier = 1.1,
                                             learning_rate = 0.1),
                loss = "mse")
  history <- model$fit(by_name, epochs = 2L, verbose = 0L, shuffle = FALSE,
                       callbacks = list(callback_privacy_budget(delta = 1e-3)))
  ledger <- model$optimizer$privacy_ledger
  expect_identical(ledger$unit, "user")
  segment <- ledger$segments[[1]]
  expect_identical(segment$n, 30L)
  expect_identical(segment$examples_per_unit, 3L)
  expect_identical(segment$steps, 10L) # 2 epochs of floor(1 / 0.2) steps
  logged <- unlist(history$history$epsilon)
  expect_equal(logged[[2]], ledger$epsilon(1e-3, "pld"), tolerance = 1e-6)
  expect_equal(logged[[2]], compute_epsilon(n = 30, batch_size = 6, noise_multiplier = 1.1,
                                            epochs = 2, delta = 1e-3, accountant = "pld"),
               tolerance = 0.05)
})

test_that("poisson_batches() from R arrays equals Python's batches for the same seed", {
  skip_if_no_core()
  data <- regression_data(n = 100)
  # 20 and 3 are R doubles; Python wants integers.
  batches <- poisson_batches(data, sampling_rate = 0.1, max_batch_size = 20,
                             seed = 3, steps = 4)
  expect_identical(as.integer(as_r_array(batches$cardinality())), 4L)
  ours <- reticulate::iterate(batches, function(batch) lapply(batch, as_r_array))
  expect_identical(dim(ours[[1]][[1]]), c(20L, 3L))
  expect_identical(dim(ours[[1]][[2]]), c(20L, 1L))
  data_module <- reticulate::import("pydp_r.data")
  numpy <- reticulate::import("numpy", convert = FALSE)
  theirs <- data_module$poisson_batches(
    reticulate::tuple(numpy$asarray(data$x), numpy$asarray(data$y)),
    0.1, max_batch_size = 20L, seed = 3L, steps = 4L
  )
  theirs <- reticulate::iterate(theirs, function(batch) lapply(batch, as_r_array))
  expect_identical(ours, theirs)
  # Padding rows have weight 0, sampled rows weight 1; sampled rows are data rows.
  weights <- ours[[1]][[3]]
  expect_true(all(weights %in% c(0, 1)))
  sampled <- ours[[1]][[1]][weights == 1, , drop = FALSE]
  expect_true(all(apply(sampled, 1, function(row) {
    any(apply(data$x, 1, function(data_row) all(abs(data_row - row) < 1e-12)))
  })))

  unnamed <- poisson_batches(list(data$x, as.vector(data$y)), 0.1,
                             max_batch_size = 20, seed = 3, steps = 4)
  unnamed <- reticulate::iterate(unnamed, function(batch) lapply(batch, as_r_array))
  expect_identical(unnamed[[2]][[1]], ours[[2]][[1]])
  expect_identical(as.vector(unnamed[[2]][[2]]), as.vector(ours[[2]][[2]]))
})

test_that("heart_rate_arrays() gives R arrays of the walkthrough's shapes", {
  skip_if_no_core()
  subject <- synthetic_ppg_subject(n_labels = 300, include_chest = FALSE)
  arrays <- heart_rate_arrays(subject, train_max = 250)
  expect_named(arrays, c("x_train", "y_train", "x_test", "y_test"))
  expect_identical(dim(arrays$x_train), c(250L - 12L + 1L, 12L, 6L))
  expect_identical(dim(arrays$y_train), c(250L - 12L + 1L, 1L))
  expect_identical(dim(arrays$x_test), c(300L - 250L - 12L + 1L, 12L, 6L))
  datasets <- heart_rate_datasets(subject, train_max = 250, shuffle = FALSE,
                                  batch_size = 1000)
  expect_equal(arrays$x_test, as_r_array(first_batch(datasets$test)[[1]]))
  expect_equal(arrays$y_train, as_r_array(first_batch(datasets$train)[[2]]))
})

test_that("bad arguments of the person-level data functions fail in R", {
  expect_error(synthetic_ppg_population(0), "`n_users`")
  expect_error(synthetic_ppg_population(2, seed = 1.5), "`seed`")
  expect_error(synthetic_ppg_population(2, n_labels_range = c(10, 5)),
               "`n_labels_range` must be two whole numbers")
  expect_error(synthetic_ppg_population(2, n_labels_range = 10), "`n_labels_range`")
  expect_error(synthetic_ppg_population(2, include_chest = NA), "`include_chest`")
  expect_error(load_ppg_dalia_subjects(1), "`data_dir`")
  expect_error(load_ppg_dalia_subjects(file.path(tempdir(), "no-such-folder")),
               "`data_dir` must be the path of an existing folder")
  expect_error(load_ppg_dalia_subjects(tempdir(), subjects = 1:2), "`subjects`")
  expect_error(leave_subjects_out(1:3, "S1"), "`subject_ids`")
  expect_error(leave_subjects_out(c("S1", NA), "S1"), "`subject_ids`")
  expect_error(leave_subjects_out(c("S1", "S2"), character()), "`test_subjects`")
  expect_error(subject_folds(c("S1", "S2"), 1), "`n_folds`")
  expect_error(subject_folds(c("S1", "S2"), 2, seed = -1), "`seed`")
  expect_error(heart_rate_sequences(42), "`subjects`")
  expect_error(heart_rate_sequences(list(), 12), "`subjects`")
  expect_error(heart_rate_sequences(list(list(a = 1)), num_timesteps = 0),
               "`num_timesteps`")
  expect_error(heart_rate_arrays(list(signal = list(), label = 1), with_user_ids = 1),
               "`with_user_ids`")
})

test_that("synthetic_ppg_population() gives distinct people equal to Python's", {
  skip_if_no_core()
  people <- synthetic_ppg_population(3, seed = 2, n_labels_range = c(40, 90))
  expect_length(people, 3L)
  ids <- vapply(people, function(person) person$subject, "")
  expect_identical(ids, c("P2-0", "P2-1", "P2-2"))
  lengths <- vapply(people, function(person) length(person$label), 1L)
  expect_true(all(lengths >= 40L & lengths <= 90L))
  expect_length(people[[1]]$signal$chest, 0L)
  data_module <- reticulate::import("pydp_r.data", convert = FALSE)
  theirs <- data_module$synthetic_ppg_population(
    3L, 2L, n_labels_range = reticulate::tuple(40L, 90L)
  )
  expect_identical(people[[3]]$label, as_r_array(theirs[2]$get("label")))
  expect_identical(people[[3]]$signal$wrist$BVP,
                   as_r_array(theirs[2]$get("signal")$get("wrist")$get("BVP")))
  other <- synthetic_ppg_population(1, seed = 3, n_labels_range = c(40, 90))
  expect_false(identical(other[[1]]$label[1:40], people[[1]]$label[1:40]))
})

test_that("load_ppg_dalia_subjects() reads PPG_FieldStudy by id", {
  skip_if_no_core()
  data_module <- reticulate::import("pydp_r.data", convert = FALSE)
  root <- tempfile("PPG-DaLiA")
  on.exit(unlink(root, recursive = TRUE))
  for (number in c(1L, 2L, 10L)) {
    folder <- file.path(root, "PPG_FieldStudy", paste0("S", number))
    dir.create(folder, recursive = TRUE)
    subject <- data_module$synthetic_ppg_subject(30L + number, number,
                                                 chest_seconds = 1)
    data_module$save_ppg_dalia_subject(subject,
                                       file.path(folder, paste0("S", number, ".pkl")))
  }
  subjects <- load_ppg_dalia_subjects(root)
  expect_named(subjects, c("S1", "S2", "S10"))
  expect_length(subjects$S10$label, 40L)
  expect_identical(subjects$S2$subject, "S2")
  expect_length(subjects$S2$signal$chest, 0L)
  chosen <- load_ppg_dalia_subjects(root, "S10", include_chest = TRUE)
  expect_named(chosen, "S10")
  expect_identical(nrow(chosen$S10$signal$chest$ECG), 700L)
  error <- expect_error(load_ppg_dalia_subjects(root, "S3"),
                        class = "pydpr_python_error")
  expect_match(conditionMessage(error), "subjects must be among")

  split <- leave_subjects_out(subjects, test_subjects = "S2")
  expect_identical(split, list(train = c("S1", "S10"), test = "S2"))
  sequences <- heart_rate_sequences(subjects[split$train], num_timesteps = 12)
  expect_identical(dim(sequences$x), c(31L - 11L + 40L - 11L, 12L, 6L))
  expect_identical(sequences$user_ids, rep(c("S1", "S10"), c(20L, 29L)))
})

test_that("splits by person keep every subject on one side", {
  skip_if_no_core()
  ids <- paste0("S", 1:15)
  folds <- subject_folds(ids, n_folds = 4, seed = 3)
  expect_length(folds, 4L)
  tested <- unlist(lapply(folds, function(fold) fold$test))
  expect_setequal(tested, ids)
  expect_length(tested, 15L)
  for (fold in folds) {
    expect_length(intersect(fold$train, fold$test), 0L)
    expect_setequal(c(fold$train, fold$test), ids)
  }
  expect_identical(subject_folds(ids[1:4], 2)[[1]]$test, c("S1", "S2"))
  error <- expect_error(leave_subjects_out(ids, "S16"), class = "pydpr_python_error")
  expect_match(conditionMessage(error), "test_subjects must be among")
})

test_that("heart_rate_sequences() of a population carries user ids; arrays add them", {
  skip_if_no_core()
  people <- synthetic_ppg_population(3, seed = 1, n_labels_range = c(50, 80))
  sequences <- heart_rate_sequences(people)
  counts <- vapply(people, function(person) length(person$label) - 11L, 1L)
  expect_identical(dim(sequences$x), c(sum(counts), 12L, 6L))
  expect_identical(dim(sequences$y), c(sum(counts), 1L))
  ids <- vapply(people, function(person) person$subject, "")
  expect_identical(sequences$user_ids, rep(ids, counts))

  plain <- heart_rate_arrays(people[[1]], train_max = 30)
  with_ids <- heart_rate_arrays(people[[1]], train_max = 30, with_user_ids = TRUE)
  expect_named(with_ids, c("x_train", "y_train", "x_test", "y_test",
                           "user_ids_train", "user_ids_test"))
  expect_identical(with_ids[1:4], plain)
  expect_identical(with_ids$user_ids_train, rep(ids[[1]], nrow(plain$y_train)))
  expect_identical(with_ids$user_ids_test, rep(ids[[1]], nrow(plain$y_test)))
})

test_that("distributed_poisson_batches() takes R arrays and user ids; one worker is one shard", {
  skip_if_no_core()
  expect_error(distributed_poisson_batches(NULL, regression_data(n = 20), 0.5,
                                           user_ids = rep(1:10, 2),
                                           max_examples_per_user = 0),
               "`max_examples_per_user`")
  expect_error(distributed_poisson_batches(NULL, regression_data(n = 20), 1.5,
                                           user_ids = rep(1:10, 2),
                                           max_examples_per_user = 2),
               "`sampling_rate`")
  tf <- reticulate::import("tensorflow")
  data <- regression_data(n = 120)
  users <- rep(sprintf("wearer%02d", 1:30), each = 4)
  batches <- distributed_poisson_batches(tf$distribute$get_strategy(), data,
                                         sampling_rate = 0.2, user_ids = users,
                                         max_examples_per_user = 3, seed = 5)
  sampling <- batches$pydp_r_poisson_sampling
  expect_identical(sampling$unit, "user")
  expect_identical(sampling$n, 30L)
  model <- linear_model()
  model$compile(optimizer = optimizer_dp_sgd(l2_norm_clip = 1, noise_multiplier = 1.1,
                                             learning_rate = 0.1),
                loss = "mse")
  history <- model$fit(batches, epochs = 1L, verbose = 0L, shuffle = FALSE,
                       callbacks = list(callback_privacy_budget(delta = 1e-3)))
  ledger <- model$optimizer$privacy_ledger
  expect_identical(ledger$unit, "user")
  expect_identical(ledger$steps, 5L)
  expect_equal(unlist(history$history$epsilon), ledger$epsilon(1e-3), tolerance = 1e-9)
})
