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

f2d2n_compile_fail(dense_zero "dense<0>::at_layer<3," "dense<N> at the layer index named above has no neurons")
f2d2n_compile_fail(loss_not_last "softmax_cross_entropy::at_layer<2," "is not the last layer: a loss must end the sequential")
f2d2n_compile_fail(no_input "layer 0 of a sequential must be input<...>")
f2d2n_compile_fail(no_loss "the last layer of a sequential must be a loss")
f2d2n_compile_fail(input_not_first "input<3>::at_layer<2," "input<...> may only be layer 0 of a sequential")
f2d2n_compile_fail(reshape_mismatch "reshape<27, 28>::at_layer<1, false, 784>" "does not fit its input: the number of elements must stay the same")
f2d2n_compile_fail(one_class "softmax_cross_entropy::at_layer<2, true, 1>" "needs at least 2 classes")
f2d2n_compile_fail(not_a_layer "every argument of sequential<...> must be a layer")
f2d2n_compile_fail(network_of_bad_model "dense<0>::at_layer<1," "has no neurons")
f2d2n_compile_fail(plan_too_many_shards "split_check<3, f2d2n::split_kind::outputs, 4, 2, 8,"
                   "splits the dense layer at the index named above by_outputs into more shards than it has neurons")
f2d2n_compile_fail(plan_inputs_too_few "split_check<1, f2d2n::split_kind::inputs, 4, 8, 3,"
                   "by_inputs into more shards than it has input features")
f2d2n_compile_fail(plan_split_without_weights "override_check<2, 5, false>" "names a layer without weights")
f2d2n_compile_fail(plan_twice "names data_parallel more than once")
f2d2n_compile_fail(plan_unknown_policy "takes data_parallel<R>, pipeline<P, ...> and tensor_parallel<S, ...>")
f2d2n_compile_fail(plan_too_many_stages "pipeline_check<4, 3," "has more stages than the model has hidden layers")
f2d2n_compile_fail(plan_bad_stage_starts "pipeline_check<3, 5, true, 2, false>" "must be increasing layer indices")
f2d2n_compile_fail(plan_grid_mismatch "split_check<1, f2d2n::split_kind::grid, 4, 8, 16, 2, 3>" "does not cover the shards")

add_test(NAME compile_fail_control
         COMMAND ${CMAKE_COMMAND} -DCXX=${CMAKE_CXX_COMPILER} -DFLAGS=${_cf_flags}
                 -DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/control_ok.cpp -DSHOULD_COMPILE=ON
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/run.cmake)
