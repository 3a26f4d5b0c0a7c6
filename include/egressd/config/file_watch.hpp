#pragma once
// Notices changes to a set of files (the source lists a config reads) by polling stat(2): the
// same on every file system, and it sees the atomic rename a sync job or a Kubernetes ConfigMap
// update makes, which an inotify watch on the old inode would miss.
#include <string>
#include <vector>

namespace egressd::config {

class file_watch {
 public:
  struct state {
    bool exists = false;
    unsigned long long dev = 0, ino = 0, size = 0, mtime_ns = 0;
    bool operator==(const state&) const = default;
  };
  // The current state of each file.
  static std::vector<state> stamp(const std::vector<std::string>& files);

  // Starts watching files, taking their current state as the known one.
  void reset(std::vector<std::string> files);
  // The same with the states the files had when they were read (stamp() before reading them):
  // a file replaced since is reported by the next polls.
  void reset(std::vector<std::string> files, std::vector<state> stamps);

  // Call periodically. True once a change (a file appeared, vanished, or changed device, inode,
  // size or modification time) has been seen on two polls in a row with the same state, so a
  // file still being written is not read half-way; the new state becomes the known one.
  bool poll();

  const std::vector<std::string>& files() const noexcept { return files_; }
  // The files whose change the last poll() that returned true reported, in watch order.
  const std::vector<std::string>& changed() const noexcept { return changed_; }

 private:
  std::vector<std::string> files_;
  std::vector<state> known_;
  std::vector<state> pending_;  // the changed state seen on the previous poll; empty: none
  std::vector<std::string> changed_;
};

}  // namespace egressd::config
