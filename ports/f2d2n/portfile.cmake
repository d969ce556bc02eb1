# vcpkg overlay port of f2d2n: the project's own CMake install (headers, the package's CMake files,
# FindxxHash.cmake, the license), with its tests, examples, benchmarks and tools off, so nothing is
# compiled. The source is the repository this port sits in:
#   vcpkg install f2d2n --overlay-ports=<f2d2n>/ports
# or, in a manifest project, "dependencies": ["f2d2n"] with <f2d2n>/ports among the overlay ports.
# Written, not tested: vcpkg cannot be installed where f2d2n is developed (README, "Install").
set(VCPKG_BUILD_TYPE release)  # header-only: one configuration is all there is

get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/f2d2n/f2d2n.hpp")
  message(FATAL_ERROR "f2d2n's overlay port expects to sit in ports/f2d2n of f2d2n's source tree")
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DF2D2N_BUILD_TESTS=OFF
    -DF2D2N_BUILD_EXAMPLES=OFF
    -DF2D2N_BUILD_BENCH=OFF
    -DF2D2N_BUILD_TOOLS=OFF
    # vcpkg has no libxsmm: the portable kernel backend, whatever the build machine has (docs/kernels.md)
    -DF2D2N_KERNELS=eigen
)
vcpkg_cmake_install()
# share/cmake/f2d2n -> share/f2d2n, where vcpkg's find_package looks; FindxxHash.cmake moves with it
# (f2d2nConfig.cmake finds it next to itself) and finds vcpkg's own xxHash package first.
vcpkg_cmake_config_fixup(PACKAGE_NAME f2d2n CONFIG_PATH share/cmake/f2d2n)

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/share/doc" "${CURRENT_PACKAGES_DIR}/lib")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
