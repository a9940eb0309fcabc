residual_model <- function(mix_batch = FALSE) {
  keras <- reticulate::import("keras")
  inputs <- keras$Input(shape = list(8L, 4L))
  hidden <- keras$layers$Dense(4L, name = "inner")(inputs)
  if (mix_batch) {
    hidden <- keras$ops$subtract(
      hidden, keras$ops$mean(hidden, axis = 0L, keepdims = TRUE)
    )
  }
  hidden <- keras$ops$add(hidden, inputs)
  outputs <- keras$layers$Dense(1L)(keras$layers$Flatten()(hidden))
  keras$Model(inputs, outputs)
}

test_that("bad arguments fail in R, naming the argument", {
  expect_error(clipping_report("model"), "`model` must be a Keras model")
})

test_that("a residual model takes the fast path, each layer with its rule", {
  skip_if_no_core()
  report <- clipping_report(residual_model())
  expect_s3_class(report, "data.frame")
  expect_identical(names(report), c("name", "type", "path", "detail"))
  expect_identical(attr(report, "path"), "fast")
  expect_null(attr(report, "reason"))
  expect_identical(report$detail[report$name == "inner"], "rule DenseRule")
  expect_identical(report$detail[report$type == "Add"], "per-example operation")
  expect_output(print(report), "fast path")
})

test_that("a batch mean sends the model to the general path, saying where", {
  skip_if_no_core()
  report <- clipping_report(residual_model(mix_batch = TRUE))
  expect_identical(attr(report, "path"), "general")
  expect_match(attr(report, "reason"), "(Mean)", fixed = TRUE)
  expect_match(attr(report, "reason"), "batch axis")
  expect_identical(report$path[report$type == "Mean"], "general")
})

test_that("a subclassed model is traced from example inputs", {
  skip_if_no_core()
  main <- reticulate::py_run_string("
import keras

class Tiny(keras.Model):
    def __init__(self):
        super().__init__(name='tiny')
        self.inner = keras.layers.Dense(3)
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(keras.ops.relu(self.inner(x)))

tiny = Tiny()
", convert = FALSE)
  x <- matrix(rnorm(12), nrow = 4)
  main$tiny(x)
  expect_identical(attr(clipping_report(main$tiny), "path"), "general")
  expect_match(attr(clipping_report(main$tiny), "reason"), "example inputs")
  report <- clipping_report(main$tiny, x = x)
  expect_identical(attr(report, "path"), "fast")
  expect_identical(report$type, c("Dense", "Relu", "Dense"))
})
