# Findlibxsmm.cmake: LIBXSMM (https://github.com/libxsmm/libxsmm), the JIT GEMM kernels behind
# f2d2n's default kernel backend (docs/kernels.md). Installed with f2d2n's package and used by
# f2d2nConfig.cmake, since Debian's libxsmm-dev ships static libraries and pkg-config files only.
#
#   find_package(libxsmm [version] [REQUIRED])
#
# Defines the target libxsmm::libxsmm and libxsmm_FOUND, libxsmm_VERSION, libxsmm_INCLUDE_DIR,
# libxsmm_LIBRARY. The target links libxsmm, then its "noblas" stubs (f2d2n calls generated
# kernels only, never libxsmm's BLAS fallbacks, so no BLAS is linked), then what libxsmm itself
# needs (threads, dl, rt, m). libxsmm_INCLUDE_DIR and libxsmm_LIBRARY may be set by hand.
include(FindPackageHandleStandardArgs)

find_path(libxsmm_INCLUDE_DIR NAMES libxsmm.h DOC "Directory of LIBXSMM's libxsmm.h")
find_library(libxsmm_LIBRARY NAMES xsmm DOC "LIBXSMM's library (libxsmm.a on Debian)")
find_library(libxsmm_NOBLAS_LIBRARY NAMES xsmmnoblas DOC "LIBXSMM's BLAS stubs (libxsmmnoblas.a)")
mark_as_advanced(libxsmm_INCLUDE_DIR libxsmm_LIBRARY libxsmm_NOBLAS_LIBRARY)
if(libxsmm_INCLUDE_DIR AND EXISTS "${libxsmm_INCLUDE_DIR}/libxsmm_version.h")
  file(STRINGS "${libxsmm_INCLUDE_DIR}/libxsmm_version.h" _f2d2n_xsmm_lines
       REGEX "^#[ \t]*define[ \t]+LIBXSMM_CONFIG_VERSION_(MAJOR|MINOR|UPDATE)[ \t]+[0-9]+")
  foreach(_part MAJOR MINOR UPDATE)
    string(REGEX REPLACE ".*LIBXSMM_CONFIG_VERSION_${_part}[ \t]+([0-9]+).*" "\\1" _f2d2n_xsmm_${_part}
           "${_f2d2n_xsmm_lines}")
  endforeach()
  set(libxsmm_VERSION "${_f2d2n_xsmm_MAJOR}.${_f2d2n_xsmm_MINOR}.${_f2d2n_xsmm_UPDATE}")
  unset(_f2d2n_xsmm_lines)
  unset(_f2d2n_xsmm_MAJOR)
  unset(_f2d2n_xsmm_MINOR)
  unset(_f2d2n_xsmm_UPDATE)
endif()
find_package_handle_standard_args(libxsmm REQUIRED_VARS libxsmm_LIBRARY libxsmm_NOBLAS_LIBRARY libxsmm_INCLUDE_DIR
                                  VERSION_VAR libxsmm_VERSION)
if(libxsmm_FOUND AND NOT TARGET libxsmm::libxsmm)
  find_package(Threads REQUIRED)
  add_library(libxsmm::libxsmm UNKNOWN IMPORTED)
  set_target_properties(libxsmm::libxsmm PROPERTIES
    IMPORTED_LOCATION "${libxsmm_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${libxsmm_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${libxsmm_NOBLAS_LIBRARY};Threads::Threads;${CMAKE_DL_LIBS};rt;m")
endif()
