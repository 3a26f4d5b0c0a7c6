# Warnings and sanitizer toggles shared by every target.
option(EGRESSD_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)

function(egressd_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow=local
    -Wnon-virtual-dtor -Wno-missing-field-initializers
    # GCC 12 false positive on Asio coroutine frames (operator new/delete of awaitable_frame).
    -Wno-mismatched-new-delete
    # GCC 12 false positive at -O3 on std::string inserts (GCC PR 105651).
    -Wno-restrict)
endfunction()

if(EGRESSD_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
