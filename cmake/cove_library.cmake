# cove_library(NAME <name> [DEPS <targets>...])
# Builds cove_<name> (alias cove::<name>) from <dir>/src/*.cpp with public headers in
# <dir>/include, and — when tests are on — cove_<name>_test from <dir>/tests/*.cpp
# (doctest, registered with ctest under the label "unit").
set(COVE_WARNINGS -Wall -Wextra -Werror -Wno-missing-field-initializers
  # g++ 12 at -O3 reports std::string/std::vector copies it inlined as overlapping or
  # out of bounds (-Wrestrict, -Warray-bounds, -Wstringop-overflow: GCC bugs 105329,
  # 105651, 106199). Release (-O3) builds only; every other build keeps them.
  $<$<AND:$<CXX_COMPILER_ID:GNU>,$<CONFIG:Release>>:-Wno-restrict$<SEMICOLON>-Wno-array-bounds$<SEMICOLON>-Wno-stringop-overflow>)

function(cove_library)
  cmake_parse_arguments(ARG "" "NAME" "DEPS;TEST_DEPS" ${ARGN})
  set(target cove_${ARG_NAME})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  add_library(${target} STATIC ${srcs})
  add_library(cove::${ARG_NAME} ALIAS ${target})
  target_include_directories(${target} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_compile_options(${target} PRIVATE ${COVE_WARNINGS})
  target_link_libraries(${target} PUBLIC ${ARG_DEPS})
  if(COVE_TESTS)
    file(GLOB test_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/*.cpp)
    if(test_srcs)
      add_executable(${target}_test ${test_srcs})
      target_compile_options(${target}_test PRIVATE ${COVE_WARNINGS})
      target_link_libraries(${target}_test PRIVATE ${target} cove_test_main ${ARG_TEST_DEPS})
      target_compile_definitions(${target}_test PRIVATE
        COVE_FIXTURES_DIR="${COVE_FIXTURES_DIR}" COVE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
      add_test(NAME unit.${ARG_NAME} COMMAND ${target}_test)
      set_tests_properties(unit.${ARG_NAME} PROPERTIES LABELS unit TIMEOUT 300)
    endif()
  endif()
  # fuzz/<name>.cpp: one libFuzzer target each (LLVMFuzzerTestOneInput). With COVE_FUZZ
  # they link libFuzzer (clang); otherwise they link cove's replay driver and run as a
  # short smoke test over fuzz/corpus/<name>/ plus deterministic mutations of it.
  file(GLOB fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/*.cpp)
  if(NOT COVE_FUZZ AND NOT COVE_TESTS)
    set(fuzz_srcs)  # no libFuzzer and no replay driver: nothing would provide main()
  endif()
  foreach(f ${fuzz_srcs})
    get_filename_component(stem ${f} NAME_WE)
    set(fz fuzz_${stem})
    add_executable(${fz} ${f})
    target_compile_options(${fz} PRIVATE ${COVE_WARNINGS})
    target_link_libraries(${fz} PRIVATE ${target})
    set(corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${stem})
    if(COVE_FUZZ)
      target_link_options(${fz} PRIVATE -fsanitize=fuzzer)
    elseif(COVE_TESTS)
      target_link_libraries(${fz} PRIVATE cove_fuzz_driver)
      add_test(NAME fuzz.${stem} COMMAND ${fz} --iterations 20000 ${corpus})
      set_tests_properties(fuzz.${stem} PROPERTIES LABELS fuzz TIMEOUT 300)
    endif()
  endforeach()
endfunction()

# cove_executable(NAME <binary> SRCS <files> DEPS <targets>)
function(cove_executable)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_compile_options(${ARG_NAME} PRIVATE ${COVE_WARNINGS})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS})
endfunction()
