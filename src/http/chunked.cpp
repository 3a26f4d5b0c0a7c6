#include "egressd/http/chunked.hpp"

#include <cstdio>

namespace egressd::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

chunked_decoder::step chunked_decoder::fail(std::size_t consumed, const char* why) {
  state_ = state::error;
  step s;
  s.consumed = consumed;
  s.error = true;
  s.detail = why;
  return s;
}

chunked_decoder::step chunked_decoder::decode(std::string_view in) {
  std::size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    switch (state_) {
      case state::size: {
        int h = hex_value(c);
        if (h >= 0) {
          // 16 hex digits already cover 2^64; more can only be an overflow attempt.
          if (++digits_ > 16) return fail(i, "chunk size overflows");
          remaining_ = (remaining_ << 4) | static_cast<unsigned>(h);
          ++i;
          break;
        }
        if (digits_ == 0) return fail(i, "chunk size is not hex");
        if (c == '\r') {
          state_ = state::size_lf;
        } else if (c == ';' || c == ' ' || c == '\t') {
          // BWS is allowed only before a ';' that starts an extension (checked in ext).
          ext_ws_only_ = c != ';';
          state_ = state::ext;
        } else {
          return fail(i, "invalid byte after chunk size");
        }
        ++line_len_;
        ++i;
        break;
      }
      case state::ext: {
        if (++line_len_ > max_line_) return fail(i, "chunk line too long");
        if (c == '\r') {
          if (ext_ws_only_) return fail(i, "whitespace after chunk size");
          state_ = state::size_lf;
        } else if (ext_ws_only_ && c == ';') {
          ext_ws_only_ = false;
        } else if (ext_ws_only_ && c != ' ' && c != '\t') {
          return fail(i, "invalid byte after chunk size");
        } else if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
          return fail(i, "control byte in chunk extension");
        } else if (c == 0x7f) {
          return fail(i, "control byte in chunk extension");
        }
        ++i;
        break;
      }
      case state::size_lf: {
        if (c != '\n') return fail(i, "chunk size line not ended by CRLF");
        ++i;
        line_len_ = 0;
        digits_ = 0;
        ext_ws_only_ = true;
        if (remaining_ == 0) {
          state_ = state::trailer;
          trailer_line_empty_ = true;
          trailer_cr_ = false;
        } else {
          state_ = state::data;
        }
        break;
      }
      case state::data: {
        std::size_t avail = in.size() - i;
        std::size_t n = remaining_ < avail ? static_cast<std::size_t>(remaining_) : avail;
        remaining_ -= n;
        if (remaining_ == 0) state_ = state::data_cr;
        step s;
        s.data = in.substr(i, n);
        s.consumed = i + n;
        return s;
      }
      case state::data_cr:
        if (c != '\r') return fail(i, "chunk data not followed by CRLF");
        state_ = state::data_lf;
        ++i;
        break;
      case state::data_lf:
        if (c != '\n') return fail(i, "chunk data not followed by CRLF");
        state_ = state::size;
        ++i;
        break;
      case state::trailer: {
        // Trailer fields are checked for line syntax (CRLF only, no controls) and dropped: we
        // never forward trailers, so their content cannot confuse anything downstream.
        if (++trailer_len_ > max_trailer_) return fail(i, "trailer section too large");
        if (trailer_cr_) {
          if (c != '\n') return fail(i, "bare CR in trailer");
          trailer_cr_ = false;
          ++i;
          if (trailer_line_empty_) {
            state_ = state::done;
            step s;
            s.consumed = i;
            s.done = true;
            return s;
          }
          trailer_line_empty_ = true;
          line_len_ = 0;
          break;
        }
        if (c == '\r') {
          trailer_cr_ = true;
        } else if (c == '\n') {
          return fail(i, "bare LF in trailer");
        } else {
          if (trailer_line_empty_ && (c == ' ' || c == '\t')) return fail(i, "obs-fold in trailer");
          if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
            return fail(i, "control byte in trailer");
          if (++line_len_ > max_line_) return fail(i, "trailer line too long");
          trailer_line_empty_ = false;
        }
        ++i;
        break;
      }
      case state::done: {
        step s;
        s.consumed = i;
        s.done = true;
        return s;
      }
      case state::error:
        return fail(i, "decoder already failed");
    }
  }
  step s;
  s.consumed = i;
  s.done = state_ == state::done;
  s.error = state_ == state::error;
  return s;
}

void append_chunk_header(std::string& out, std::size_t n) {
  char buf[32];
  int len = std::snprintf(buf, sizeof buf, "%zx\r\n", n);
  out.append(buf, static_cast<std::size_t>(len));
}

}  // namespace egressd::http
