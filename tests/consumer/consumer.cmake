# A downstream project builds against f2d2n installed (find_package) and as a subdirectory.
foreach(mode package subdirectory)
  add_test(NAME consumer_${mode}
           COMMAND ${CMAKE_COMMAND} -DMODE=${mode} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DBUILD_DIR=${PROJECT_BINARY_DIR}
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/consumer_${mode} -DGENERATOR=${CMAKE_GENERATOR}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run.cmake)
endforeach()
