# FindxxHash.cmake: xxHash (https://github.com/Cyan4973/xxHash), which f2d2n uses header-only
# (XXH_INLINE_ALL: XXH3 checksums of frames, files and models). Installed with f2d2n's package and
# used by f2d2nConfig.cmake, since Debian's libxxhash-dev ships no CMake package.
#
#   find_package(xxHash [version] [REQUIRED])
#
# Defines the target xxHash::xxhash (the name xxHash's own CMake package, vcpkg's and Conan's use)
# and xxHash_FOUND, xxHash_VERSION, xxHash_INCLUDE_DIR. xxHash's own package is used where there is
# one (vcpkg, Conan, a source install); otherwise the target is an IMPORTED INTERFACE library
# carrying the directory of <xxhash.h> (header-only: nothing to link). xxHash_INCLUDE_DIR may be
# set by hand to pick one.
include(FindPackageHandleStandardArgs)

if(NOT TARGET xxHash::xxhash AND NOT xxHash_INCLUDE_DIR)
  find_package(xxHash CONFIG QUIET)  # its own package, where it has one (not a recursion: CONFIG)
  if(TARGET xxHash::xxhash)
    get_target_property(_f2d2n_xxhash_dirs xxHash::xxhash INTERFACE_INCLUDE_DIRECTORIES)
    set(xxHash_INCLUDE_DIR "${_f2d2n_xxhash_dirs}")
    unset(_f2d2n_xxhash_dirs)
  endif()
endif()

if(NOT TARGET xxHash::xxhash)
  find_path(xxHash_INCLUDE_DIR NAMES xxhash.h DOC "Directory of xxHash's xxhash.h")
  mark_as_advanced(xxHash_INCLUDE_DIR)
  if(xxHash_INCLUDE_DIR AND EXISTS "${xxHash_INCLUDE_DIR}/xxhash.h")
    file(STRINGS "${xxHash_INCLUDE_DIR}/xxhash.h" _f2d2n_xxhash_lines
         REGEX "^#[ \t]*define[ \t]+XXH_VERSION_(MAJOR|MINOR|RELEASE)[ \t]+[0-9]+")
    foreach(_part MAJOR MINOR RELEASE)
      string(REGEX REPLACE ".*XXH_VERSION_${_part}[ \t]+([0-9]+).*" "\\1" _f2d2n_xxhash_${_part}
             "${_f2d2n_xxhash_lines}")
    endforeach()
    set(xxHash_VERSION "${_f2d2n_xxhash_MAJOR}.${_f2d2n_xxhash_MINOR}.${_f2d2n_xxhash_RELEASE}")
    unset(_f2d2n_xxhash_lines)
    unset(_f2d2n_xxhash_MAJOR)
    unset(_f2d2n_xxhash_MINOR)
    unset(_f2d2n_xxhash_RELEASE)
  endif()
  find_package_handle_standard_args(xxHash REQUIRED_VARS xxHash_INCLUDE_DIR VERSION_VAR xxHash_VERSION)
  if(xxHash_FOUND)
    add_library(xxHash::xxhash INTERFACE IMPORTED)
    set_target_properties(xxHash::xxhash PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${xxHash_INCLUDE_DIR}")
  endif()
else()
  # From xxHash's own package (or a target defined before): found, at the version it says.
  if(NOT xxHash_VERSION AND DEFINED xxHash_VERSION_STRING)
    set(xxHash_VERSION "${xxHash_VERSION_STRING}")
  endif()
  set(xxHash_FOUND TRUE)
  find_package_handle_standard_args(xxHash REQUIRED_VARS xxHash_FOUND VERSION_VAR xxHash_VERSION)
endif()
