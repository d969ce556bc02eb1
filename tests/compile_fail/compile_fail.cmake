# Compile-fail tests: each file under compile_fail/ must fail to compile, and the compiler's output
# must contain every expected text (the check's message and the index of the layer it names).
get_target_property(_eigen_inc Eigen3::Eigen INTERFACE_INCLUDE_DIRECTORIES)
set(_cf_flags -std=c++20 -I${PROJECT_SOURCE_DIR}/include)
foreach(dir IN LISTS _eigen_inc Boost_INCLUDE_DIRS)
  # The compiler's own directories (/usr/include) must stay implicit: -isystem breaks #include_next.
  if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    list(APPEND _cf_flags -isystem ${dir})
  endif()
endforeach()
list(JOIN _cf_flags "|" _cf_flags)

function(f2d2n_compile_fail name)
  list(JOIN ARGN "|" expect)
  add_test(NAME compile_fail_${name}
           COMMAND ${CMAKE_COMMAND} -DCXX=${CMAKE_CXX_COMPILER} -DFLAGS=${_cf_flags}
                   -DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/${name}.cpp -DEXPECT=${expect}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/run.cmake)
endfunction()
# As f2d2n_compile_fail, and the compiler reports exactly one error.
function(f2d2n_plan_fail name)
  list(JOIN ARGN "|" expect)
  add_test(NAME compile_fail_${name}
           COMMAND ${CMAKE_COMMAND} -DCXX=${CMAKE_CXX_COMPILER} -DFLAGS=${_cf_flags}
                   -DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/${name}.cpp -DEXPECT=${expect} -DMAX_ERRORS=1
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/run.cmake)
endfunction()

f2d2n_compile_fail(dense_zero "dense<0>::at_layer<3," "dense<N> at the layer index named above has no neurons")
f2d2n_compile_fail(loss_not_last "softmax_cross_entropy::at_layer<2," "is not the last layer: a loss must end the sequential")
f2d2n_compile_fail(no_input "layer 0 of a sequential must be input<...>")
f2d2n_compile_fail(no_loss "the last layer of a sequential must be a loss")
f2d2n_compile_fail(input_not_first "input<3>::at_layer<2," "input<...> may only be layer 0 of a sequential")
f2d2n_compile_fail(reshape_mismatch "reshape<27, 28>::at_layer<1, false, 784>" "does not fit its input: the number of elements must stay the same")
f2d2n_compile_fail(one_class "softmax_cross_entropy::at_layer<2, true, 1>" "needs at least 2 classes")
f2d2n_compile_fail(not_a_layer "every argument of sequential<...> must be a layer")
f2d2n_compile_fail(network_of_bad_model "dense<0>::at_layer<1," "has no neurons")
f2d2n_compile_fail(network_integer_scalar "network<f2d2n::sequential<.*>, int>"
                   "network<model, Scalar> needs a floating-point Scalar")
# Convolutional layers: each mistake one error, naming the layer's index and input shape.
f2d2n_plan_fail(conv_kernel_too_large "conv2d<2, 7>::at_layer<2, false, 4, 4, 1>"
                "the kernel of conv2d at the layer index named above is larger than its padded input")
f2d2n_plan_fail(conv_stride_zero "conv2d<2, 3, 0>::at_layer<1," "has a stride of 0")
f2d2n_plan_fail(conv_channels_zero "conv2d<0, 3>::at_layer<1," "has no output channels")
f2d2n_plan_fail(conv_after_flat "conv2d<4, 3>::at_layer<2, false, 64>" "needs an image .height, width")
f2d2n_plan_fail(pool_too_large "pooling<5, 5>::at_layer<2, false, 4, 4, 2>" "pooling window at the layer index named above is larger than its input")
f2d2n_plan_fail(dropout_rate "dropout<1.0e\\+0>" "dropout<Rate> needs 0 <= Rate < 1")
# A plan's mistake is one error, raised by any use of the plan (plan/detail/checks.hpp).
f2d2n_plan_fail(plan_too_many_shards
                "dense_split<f2d2n::plan_check::layer<3>, f2d2n::split_kind::outputs, f2d2n::plan_check::shards<4>, f2d2n::plan_check::neurons<2>"
                "splits this dense layer by_outputs into more shards than it has neurons")
f2d2n_plan_fail(plan_inputs_too_few
                "layer<1>, f2d2n::split_kind::inputs, f2d2n::plan_check::shards<4>, f2d2n::plan_check::neurons<8>, f2d2n::plan_check::input_features<3>"
                "by_inputs into more shards than it has input features")
f2d2n_plan_fail(plan_split_without_weights
                "split_override<f2d2n::plan_check::layer<2>, f2d2n::plan_check::layers<5>, f2d2n::plan_check::without_weights>"
                "names a layer without weights")
f2d2n_plan_fail(plan_twice "names data_parallel more than once")
f2d2n_plan_fail(plan_unknown_policy "takes data_parallel<R>, pipeline<P, ...>, tensor_parallel<S, ...> and spatial<Rows, Cols>")
f2d2n_plan_fail(plan_too_many_stages "pipeline_stages<f2d2n::plan_check::stages<4>, f2d2n::plan_check::hidden_layers<3>"
                "has more stages than the model has hidden layers")
f2d2n_plan_fail(plan_bad_stage_starts
                "pipeline_stage_starts<f2d2n::plan_check::stages<3>, f2d2n::plan_check::stage_starts_named<2>, f2d2n::plan_check::not_increasing_within_the_model>"
                "must be increasing layer indices")
f2d2n_plan_fail(plan_grid_mismatch "layer<1>, f2d2n::split_kind::grid, f2d2n::plan_check::shards<4>, .*grid<2, 3>"
                "does not cover the shards")
f2d2n_plan_fail(plan_conv_inputs_too_few
                "conv_split<f2d2n::plan_check::layer<4>, f2d2n::split_kind::inputs, f2d2n::plan_check::shards<4>, .*input_channels<3>"
                "splits this convolution by_inputs into more shards than it has input channels")
f2d2n_plan_fail(plan_conv_by_grid "conv_split<f2d2n::plan_check::layer<1>, f2d2n::split_kind::grid,"
                "by_grid is not built for convolutions")

add_test(NAME compile_fail_control
         COMMAND ${CMAKE_COMMAND} -DCXX=${CMAKE_CXX_COMPILER} -DFLAGS=${_cf_flags}
                 -DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/control_ok.cpp -DSHOULD_COMPILE=ON
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/run.cmake)
