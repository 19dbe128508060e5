# Locates cove's third-party dependencies (Debian 12 packages).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL 3.0 REQUIRED)
find_package(FlatBuffers REQUIRED CONFIG)
find_package(spdlog REQUIRED CONFIG)
find_package(fmt REQUIRED CONFIG)
find_package(nlohmann_json REQUIRED CONFIG)

# nats.c: Debian's CMake config references a missing static library; use pkg-config.
pkg_check_modules(NATS REQUIRED IMPORTED_TARGET libnats)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
pkg_check_modules(TSS2 REQUIRED IMPORTED_TARGET tss2-esys tss2-tctildr tss2-mu tss2-rc)
# libvirt 9.0 C API: the manager's libvirt backend (issue 6).
pkg_check_modules(LIBVIRT REQUIRED IMPORTED_TARGET libvirt)

# CAF 0.17.6: libcaf-dev ships neither a CMake package nor a .pc file.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
add_library(CAF::core UNKNOWN IMPORTED)
set_target_properties(CAF::core PROPERTIES
  IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES Threads::Threads)

find_program(FLATC flatc REQUIRED)
find_program(NATS_SERVER nats-server PATHS /usr/sbin /usr/bin)
find_package(doctest CONFIG QUIET)
if(NOT doctest_FOUND)
  find_path(DOCTEST_INCLUDE_DIR doctest/doctest.h REQUIRED)
  add_library(doctest::doctest INTERFACE IMPORTED)
  set_target_properties(doctest::doctest PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${DOCTEST_INCLUDE_DIR}")
endif()

# gRPC++ 1.51 + protobuf 3.21: only for the cocos-compatible front doors (issue 7).
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++ protobuf)
find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
include(cove_grpc)
