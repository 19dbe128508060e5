# cove_grpc_library(NAME <name> PROTOS <file.proto>... [IMPORT_DIR <dir>])
# Generates C++ messages and gRPC stubs for the given .proto files with protoc and
# grpc_cpp_plugin into the build tree and builds them as the static library
# cove_<name>_proto (alias cove::<name>_proto). Generated code is compiled without
# -Werror: it is not ours to fix. IMPORT_DIR (default: the directory of the first
# proto) is the protoc -I root, so includes are "<import-relative path>.pb.h".
function(cove_grpc_library)
  cmake_parse_arguments(ARG "" "NAME;IMPORT_DIR" "PROTOS" ${ARGN})
  set(target cove_${ARG_NAME}_proto)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}_proto)
  list(GET ARG_PROTOS 0 first)
  get_filename_component(first_abs ${first} ABSOLUTE)
  if(NOT ARG_IMPORT_DIR)
    get_filename_component(ARG_IMPORT_DIR ${first_abs} DIRECTORY)
  endif()
  get_filename_component(import_dir ${ARG_IMPORT_DIR} ABSOLUTE)
  file(MAKE_DIRECTORY ${out})
  set(srcs)
  foreach(p ${ARG_PROTOS})
    get_filename_component(abs ${p} ABSOLUTE)
    file(RELATIVE_PATH rel ${import_dir} ${abs})
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(gen ${out}/${stem}.pb.cc ${out}/${stem}.pb.h ${out}/${stem}.grpc.pb.cc ${out}/${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${PROTOC} -I ${import_dir} --cpp_out=${out} --grpc_out=${out}
              --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} ${abs}
      DEPENDS ${abs}
      COMMENT "protoc ${rel}"
      VERBATIM)
    list(APPEND srcs ${out}/${stem}.pb.cc ${out}/${stem}.grpc.pb.cc)
  endforeach()
  add_library(${target} STATIC ${srcs})
  add_library(cove::${ARG_NAME}_proto ALIAS ${target})
  target_include_directories(${target} SYSTEM PUBLIC ${out})
  target_link_libraries(${target} PUBLIC PkgConfig::GRPCPP)
endfunction()
