# Configures, builds and runs the consumer project. Variables: MODE (package|subdirectory),
# SOURCE_DIR (f2d2n's source tree), BUILD_DIR (f2d2n's build tree), WORK (scratch directory), GENERATOR.
file(REMOVE_RECURSE ${WORK})
set(args)
if(MODE STREQUAL "package")
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK}/prefix
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "cmake --install failed")
  endif()
  set(expected include/f2d2n/f2d2n.hpp include/f2d2n/launch.hpp share/cmake/f2d2n/f2d2nConfig.cmake
               share/cmake/f2d2n/f2d2nConfigVersion.cmake share/cmake/f2d2n/FindxxHash.cmake
               share/cmake/f2d2n/Findlibxsmm.cmake share/doc/f2d2n/LICENSE)
  if(EXISTS ${BUILD_DIR}/tools/f2d2n_launch)
    list(APPEND expected bin/f2d2n_launch)  # installed with the package when the tools are built
  endif()
  foreach(f ${expected})
    if(NOT EXISTS ${WORK}/prefix/${f})
      message(FATAL_ERROR "the install lacks ${f}")
    endif()
  endforeach()
  # The launcher's supervisor is the tool's, not a public header (tools/launch/).
  foreach(f include/f2d2n/launch/launcher.hpp include/f2d2n/launch/detail)
    if(EXISTS ${WORK}/prefix/${f})
      message(FATAL_ERROR "the install holds ${f}, which is not a public header")
    endif()
  endforeach()
  list(APPEND args -DCMAKE_PREFIX_PATH=${WORK}/prefix)
else()
  list(APPEND args -DF2D2N_SOURCE_DIR=${SOURCE_DIR})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK}/build -G ${GENERATOR}
                        -DF2D2N_CONSUMER_MODE=${MODE} -DCMAKE_BUILD_TYPE=Release ${args}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer (${MODE}) failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer (${MODE}) failed")
endif()
execute_process(COMMAND ${WORK}/build/consumer RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the consumer (${MODE}) ran and failed")
endif()
# With MPI on the machine, the consumer must have got f2d2n::mpi too, and its program runs on 2 ranks.
find_program(MPIRUN mpirun)
if(MPIRUN)
  if(NOT EXISTS ${WORK}/build/consumer_mpi)
    message(FATAL_ERROR "mpirun is here, but the consumer (${MODE}) found no f2d2n::mpi")
  endif()
  execute_process(COMMAND ${MPIRUN} --oversubscribe --allow-run-as-root -np 2 ${WORK}/build/consumer_mpi
                  RESULT_VARIABLE rc TIMEOUT 120)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the MPI consumer (${MODE}) ran and failed")
  endif()
endif()
