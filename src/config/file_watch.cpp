#include "egressd/config/file_watch.hpp"

#include <sys/stat.h>

namespace egressd::config {

void file_watch::reset(std::vector<std::string> files) {
  auto stamps = stamp(files);
  reset(std::move(files), std::move(stamps));
}

void file_watch::reset(std::vector<std::string> files, std::vector<state> stamps) {
  files_ = std::move(files);
  known_ = std::move(stamps);
  known_.resize(files_.size());
  pending_.clear();
  changed_.clear();
}

std::vector<file_watch::state> file_watch::stamp(const std::vector<std::string>& files) {
  std::vector<state> out;
  out.reserve(files.size());
  for (const auto& f : files) {
    state s;
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0) {
      s.exists = true;
      s.dev = st.st_dev;
      s.ino = st.st_ino;
      s.size = static_cast<unsigned long long>(st.st_size);
      s.mtime_ns = static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull +
                   static_cast<unsigned long long>(st.st_mtim.tv_nsec);
    }
    out.push_back(s);
  }
  return out;
}

bool file_watch::poll() {
  auto now = stamp(files_);
  if (now == known_) {
    pending_.clear();
    return false;
  }
  if (now == pending_) {
    changed_.clear();
    for (std::size_t i = 0; i < files_.size(); ++i) {
      if (!(now[i] == known_[i])) changed_.push_back(files_[i]);
    }
    known_ = std::move(now);
    pending_.clear();
    return true;
  }
  pending_ = std::move(now);
  return false;
}

}  // namespace egressd::config
