#pragma once
// Strict decoder for the chunked transfer coding (RFC 9112 section 7.1). Chunk sizes are plain
// hex (no sign, no 0x, at most 16 digits), chunk extensions are syntax-checked and dropped,
// trailer fields are syntax-checked and dropped, every line ends in CRLF. Zero-copy: data is
// returned as a view into the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace egressd::http {

class chunked_decoder {
 public:
  struct step {
    std::size_t consumed = 0;  // input bytes used by this step (including data bytes)
    std::string_view data;     // payload bytes found in this step (a view into the input)
    bool done = false;         // the last chunk and the trailer section were consumed
    bool error = false;
    const char* detail = "";  // why, when error
  };

  // max_line bounds a chunk-size line and each trailer line; max_trailer the trailer section.
  explicit chunked_decoder(std::size_t max_line = 4096, std::size_t max_trailer = 64 * 1024)
      : max_line_(max_line), max_trailer_(max_trailer) {}

  // Consumes a prefix of in. Returns after at most one run of payload bytes, so the caller can
  // write it before decoding further. consumed == 0 with !done && !error means "need more".
  step decode(std::string_view in);

  bool done() const noexcept { return state_ == state::done; }

 private:
  enum class state : std::uint8_t {
    size,
    ext,
    size_lf,
    data,
    data_cr,
    data_lf,
    trailer,
    done,
    error
  };
  step fail(std::size_t consumed, const char* why);

  state state_ = state::size;
  std::uint64_t remaining_ = 0;
  unsigned digits_ = 0;
  std::size_t line_len_ = 0;
  std::size_t trailer_len_ = 0;
  bool trailer_line_empty_ = true;
  bool trailer_cr_ = false;
  bool ext_ws_only_ = true;
  std::size_t max_line_;
  std::size_t max_trailer_;
};

// Appends the chunk header for a chunk of n bytes ("1a2b\r\n") to out.
void append_chunk_header(std::string& out, std::size_t n);

}  // namespace egressd::http
