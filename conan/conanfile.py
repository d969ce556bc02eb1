# Conan 2 recipe of f2d2n: the project's own CMake install (headers, the package's CMake files,
# FindxxHash.cmake), with its tests, examples, benchmarks and tools off, so nothing is compiled.
# Consumers use the package's own f2d2nConfig.cmake (the one `ctest -R consumer` tests), which finds
# the dependencies through the config files CMakeDeps writes for them.
#   conan create conan --build=missing        (from f2d2n's source tree; runs test_package/)
# Written, not tested: Conan cannot be installed where f2d2n is developed (README, "Install").
import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, rmdir

required_conan_version = ">=2.0"


class F2d2nConan(ConanFile):
    name = "f2d2n"
    version = "0.1.0"
    description = ("Header-only C++20 library for fully distributed training of deep neural networks: "
                   "the network and its distribution over processing units are one type")
    license = "BSL-1.0"
    topics = ("deep-learning", "distributed-training", "neural-networks", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def export_sources(self):
        # The recipe sits in conan/ of the source tree: the sources are one folder up.
        root = os.path.join(self.recipe_folder, os.pardir)
        for pattern in ("CMakeLists.txt", "LICENSE", "cmake/*", "include/*"):
            copy(self, pattern, src=root, dst=self.export_sources_folder)

    def layout(self):
        cmake_layout(self, src_folder=".")

    def requirements(self):
        # The headers include all of them: every consumer needs them, and Boost.Serialization's library.
        for ref in ("boost/[>=1.74 <2]", "eigen/[>=3.4 <4]", "zlib/[>=1.2.11 <2]", "nlohmann_json/[>=3.9 <4]",
                    "xxhash/[>=0.8 <0.9]", "openssl/[>=1.1.1 <4]"):
            self.requires(ref, transitive_headers=True, transitive_libs=True)

    def validate(self):
        check_min_cppstd(self, 20)
        if self.settings.os == "Windows":
            from conan.errors import ConanInvalidConfiguration
            raise ConanInvalidConfiguration("f2d2n is POSIX only (sockets, fork/exec, fsync)")

    def package_id(self):
        self.info.clear()  # header-only: one package for every configuration

    def generate(self):
        tc = CMakeToolchain(self)
        for option in ("TESTS", "EXAMPLES", "BENCH", "TOOLS"):
            tc.cache_variables[f"F2D2N_BUILD_{option}"] = False
        # ConanCenter has no libxsmm: the portable kernel backend, whatever the build machine has
        # (docs/kernels.md).
        tc.cache_variables["F2D2N_KERNELS"] = "eigen"
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()  # nothing to compile: the install below copies headers and package files

    def package(self):
        cmake = CMake(self)
        cmake.install()
        copy(self, "LICENSE", src=self.source_folder, dst=os.path.join(self.package_folder, "licenses"))
        rmdir(self, os.path.join(self.package_folder, "share", "doc"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # The package's own CMake files, not generated ones: find_package(f2d2n) loads
        # share/cmake/f2d2n/f2d2nConfig.cmake, whose f2d2n::f2d2n carries every dependency.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs.append(os.path.join("share", "cmake", "f2d2n"))
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]  # for generators other than CMake's (Threads there)
