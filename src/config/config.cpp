#include "egressd/config/config.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <system_error>

#include "validate.hpp"
#include "values.hpp"

namespace egressd::config {
namespace {

using detail::issue;

acl::cidr must_parse_cidr(std::string_view text) {
  return acl::cidr::parse(text).value();
}

std::string child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string indexed(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// The path one level up: "a.b[2]" -> "a.b" -> "a" -> "".
std::string parent(const std::string& path) {
  const auto cut = path.find_last_of(".[");
  return cut == std::string::npos ? std::string() : path.substr(0, cut);
}

std::string kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    default:
      return "nothing";
  }
}

// A null node's mark points past it (at the next token), so only nodes with content say
// reliably where they are.
int line_of(const YAML::Node& n, int fallback) {
  if (n.IsNull() || n.Mark().is_null()) return fallback;
  return n.Mark().line + 1;
}

// Untagged and unquoted: the only scalars YAML 1.1 may read as something other than a string.
bool is_plain(const YAML::Node& n) {
  return n.IsScalar() && n.Tag() == "?";
}

bool is_plain_false(const YAML::Node& n) {
  bool value = true;
  return is_plain(n) && YAML::convert<bool>::decode(n, value) && !value;
}

std::string suggestion(std::string_view key, const std::vector<std::string_view>& known) {
  std::string_view best;
  std::size_t best_distance = 3;  // more than two edits away is not a typo worth naming
  for (auto k : known) {
    const auto d = detail::edit_distance(key, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  if (!best.empty()) return "unknown key; did you mean '" + std::string(best) + "'?";
  std::string list;
  for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
  return "unknown key; expected one of: " + list;
}

// YAML::LoadAll (yaml-cpp 0.7) never returns on some malformed streams: after a stray ',' at
// block level ("version: 1\n,\n") the parser reports an empty document again and again without
// consuming a token, and LoadAll appends each one until memory runs out (yaml-cpp issue #1040,
// fixed upstream after 0.8). So load_yaml counts documents with this handler in its own loop,
// which stops at the second, and builds only the first with YAML::Load.
class document_counter final : public YAML::EventHandler {
 public:
  std::size_t documents() const { return documents_; }
  // The line of the second document's root node, as line_of() would give it (0: null root).
  int second_line() const { return second_line_; }

  void OnDocumentStart(const YAML::Mark&) override { root_pending_ = ++documents_ == 2; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { root_pending_ = false; }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { root_pending_ = false; }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    root(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    root(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    root(mark);
  }
  void OnMapEnd() override {}

 private:
  void root(const YAML::Mark& mark) {
    if (root_pending_ && !mark.is_null()) second_line_ = mark.line + 1;
    root_pending_ = false;
  }

  std::size_t documents_ = 0;
  int second_line_ = 0;
  bool root_pending_ = false;
};

// Reads a YAML document over a config. Every problem is recorded and reading goes on, so one
// run reports everything; the line of each path is remembered for the validation pass.
class reader {
 public:
  explicit reader(std::string file) : file_(std::move(file)) {}

  void read_root(const YAML::Node& root, config& cfg);
  const std::vector<std::string>& watched() const { return watched_; }
  void add_issues(const std::vector<issue>& issues);
  std::vector<config_error> take_errors();

 private:
  using handler = std::function<void(const YAML::Node&, const std::string&, int)>;
  struct field {
    std::string_view key;
    handler read;
  };

  void fail(int line, const std::string& path, std::string message) {
    failed_paths_.push_back(path);
    errors_.push_back({file_, line, path, std::move(message)});
  }

  // Calls each known key's handler in document order; unknown and repeated keys are errors. A
  // repeated key is refused rather than "last wins" because a reader of the file would see the
  // first one.
  bool read_map(const YAML::Node& n, const std::string& path, int line,
                const std::vector<field>& fields, std::set<std::string>* seen = nullptr);

  template <class F>
  bool read_list(const YAML::Node& n, const std::string& path, int line, F&& item) {
    if (!n.IsSequence()) {
      fail(line, path, "expected a list, got " + kind(n));
      return false;
    }
    std::size_t i = 0;
    for (const auto& element : n) {
      const std::string p = indexed(path, i);
      const int l = line_of(element, line);
      lines_.emplace(p, l);
      item(element, p, l);
      ++i;
    }
    return true;
  }

  std::optional<std::string> text(const YAML::Node& n, const std::string& path, int line,
                                  std::string_view what) {
    if (n.IsScalar()) return n.Scalar();
    fail(line, path, "expected " + std::string(what) + ", got " + kind(n));
    return std::nullopt;
  }

  // Runs a detail:: parser on a scalar and reports its error at the node.
  template <class Parse>
  auto parsed(const YAML::Node& n, const std::string& path, int line, std::string_view what,
              Parse&& parse) -> decltype(parse(std::string_view(), nullptr)) {
    auto t = text(n, path, line, what);
    if (!t) return {};
    std::string error;
    auto result = parse(*t, &error);
    if (!result) fail(line, path, std::move(error));
    return result;
  }

  // Enumerations that contain "off" also take YAML 1.1's boolean false, which is what a bare
  // `off` means to most YAML tools (yaml-cpp itself keeps it as the string).
  std::optional<std::string> enum_text(const YAML::Node& n, const std::string& path, int line,
                                       std::string_view what) {
    if (is_plain_false(n)) return std::string("off");
    return text(n, path, line, what);
  }

  std::optional<bool> boolean(const YAML::Node& n, const std::string& path, int line) {
    bool value = false;
    if (is_plain(n) && YAML::convert<bool>::decode(n, value)) return value;
    fail(line, path, "expected true or false, got " + kind(n));
    return std::nullopt;
  }

  std::optional<std::uint64_t> integer(const YAML::Node& n, const std::string& path, int line) {
    return parsed(n, path, line, "an integer", detail::parse_uint);
  }

  std::optional<duration> read_duration(const YAML::Node& n, const std::string& path, int line) {
    return parsed(n, path, line, "a duration", detail::parse_duration);
  }

  std::optional<std::size_t> read_size(const YAML::Node& n, const std::string& path, int line) {
    return parsed(n, path, line, "a size", detail::parse_size);
  }

  std::optional<acl::cidr_set> cidr_list(const YAML::Node& n, const std::string& path, int line) {
    acl::cidr_set out;
    bool items_ok = true;
    const bool is_list =
        read_list(n, path, line, [&](const YAML::Node& e, const std::string& p, int l) {
          if (auto c = parsed(e, p, l, "a CIDR", detail::parse_cidr)) {
            out.add(*c);
          } else {
            items_ok = false;
          }
        });
    if (!is_list || !items_ok) return std::nullopt;
    return out;
  }

  std::optional<acl::port_set> port_list(const YAML::Node& n, const std::string& path, int line) {
    acl::port_set out;
    bool items_ok = true;
    const bool is_list =
        read_list(n, path, line, [&](const YAML::Node& e, const std::string& p, int l) {
          if (auto r = parsed(e, p, l, "a port or range", detail::parse_port_item)) {
            out.add(*r);
          } else {
            items_ok = false;
          }
        });
    if (!is_list || !items_ok) return std::nullopt;
    return out;
  }

  std::optional<std::string> file_path(const YAML::Node& n, const std::string& path, int line) {
    auto t = text(n, path, line, "a file path");
    if (!t) return std::nullopt;
    if (auto why = detail::check_readable_file(*t); !why.empty()) {
      fail(line, path, std::move(why));
      return std::nullopt;
    }
    return t;
  }

  // A source-list file: one CIDR or address per line; '#' starts a comment; blank lines and
  // surrounding blanks are ignored. Errors name the list file and its line, under the key's
  // path. The file is remembered (even when broken) so a fix to it triggers a reload.
  std::optional<acl::cidr_set> cidr_file(const YAML::Node& n, const std::string& path, int line,
                                         std::string* name_out) {
    auto name = text(n, path, line, "a file path");
    if (!name) return std::nullopt;
    watched_.push_back(*name);
    *name_out = *name;
    if (auto why = detail::check_readable_file(*name); !why.empty()) {
      fail(line, path, std::move(why));
      return std::nullopt;
    }
    std::ifstream in(*name);
    if (!in) {
      fail(line, path, "cannot read '" + *name + "'");
      return std::nullopt;
    }
    acl::cidr_set out;
    bool ok = true;
    std::string text;
    for (int ln = 1; std::getline(in, text); ++ln) {
      if (const auto hash = text.find('#'); hash != std::string::npos) text.resize(hash);
      std::string_view t = text;
      while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
      while (!t.empty() && (t.back() == ' ' || t.back() == '\t' || t.back() == '\r')) {
        t.remove_suffix(1);
      }
      if (t.empty()) continue;
      std::string why;
      if (auto c = detail::parse_cidr(t, &why)) {
        out.add(*c);
      } else {
        failed_paths_.push_back(path);
        errors_.push_back({*name, ln, path, std::move(why)});
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  // A condition list in a rule: empty would read as "match nothing" to some and "match any" to
  // others, so it is refused and the key must be left out instead.
  void require_items(const YAML::Node& n, const std::string& path, int line) {
    if (n.IsSequence() && n.size() == 0) {
      fail(line, path, "must not be empty; omit the key to match any");
    }
  }

  listener read_listener(const YAML::Node& n, const std::string& path, int line);
  std::optional<tls_settings> read_tls(const YAML::Node& n, const std::string& path, int line);
  acl::rule read_rule(const YAML::Node& n, const std::string& path, int line, std::size_t index);
  int line_for(const issue& is) const;

  std::string file_;
  std::vector<config_error> errors_;
  std::vector<std::string> failed_paths_;
  std::map<std::string, int> lines_;
  std::vector<std::string> watched_;
};

bool reader::read_map(const YAML::Node& n, const std::string& path, int line,
                      const std::vector<field>& fields, std::set<std::string>* seen) {
  if (!n.IsMap()) {
    fail(line, path, "expected a mapping, got " + kind(n));
    return false;
  }
  std::vector<std::string_view> known;
  for (const auto& f : fields) known.push_back(f.key);
  std::map<std::string, int> first_line;
  for (const auto& entry : n) {
    // Copies: yaml-cpp's iterator yields a temporary pair, so references into it would dangle.
    const YAML::Node key = entry.first;
    const YAML::Node value = entry.second;
    const int key_line = line_of(key, line);
    if (!key.IsScalar()) {
      fail(key_line, path, "expected a key name, got " + kind(key));
      continue;
    }
    const std::string name = key.Scalar();
    const std::string p = child(path, name);
    if (auto [pos, inserted] = first_line.emplace(name, key_line); !inserted) {
      fail(key_line, p, "duplicate key (first at line " + std::to_string(pos->second) + ")");
      continue;
    }
    auto f =
        std::find_if(fields.begin(), fields.end(), [&](const field& x) { return x.key == name; });
    if (f == fields.end()) {
      fail(key_line, p, suggestion(name, known));
      continue;
    }
    lines_.emplace(p, key_line);
    if (seen) seen->insert(name);
    f->read(value, p, key_line);
  }
  return true;
}

// A tls block (listeners[].tls, admin.tls): PEM file paths, each checked readable.
std::optional<tls_settings> reader::read_tls(const YAML::Node& n, const std::string& path,
                                             int line) {
  tls_settings tls;
  auto set = [&](std::string& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto f = file_path(v, p, ln)) target = *f;
    };
  };
  if (!read_map(n, path, line,
                {{"cert", set(tls.cert_file)},
                 {"key", set(tls.key_file)},
                 {"client_ca", set(tls.client_ca_file)},
                 {"client_crl", set(tls.client_crl_file)}})) {
    return std::nullopt;
  }
  // CRLs are replaced often (hours or days): a new file is picked up like a source list, by a
  // reload of its own.
  if (!tls.client_crl_file.empty() &&
      std::find(watched_.begin(), watched_.end(), tls.client_crl_file) == watched_.end()) {
    watched_.push_back(tls.client_crl_file);
  }
  return tls;
}

listener reader::read_listener(const YAML::Node& n, const std::string& path, int line) {
  listener l;
  std::set<std::string> seen;
  const bool is_map =
      read_map(n, path, line,
               {
                   {"address",
                    [&](const YAML::Node& v, const std::string& p, int ln) {
                      if (auto e = parsed(v, p, ln, "HOST:PORT", detail::parse_endpoint))
                        l.address = *e;
                    }},
                   {"proxy_protocol",
                    [&](const YAML::Node& v, const std::string& p, int ln) {
                      auto t = enum_text(v, p, ln, "off, optional or required");
                      if (!t) return;
                      std::string error;
                      if (auto m = detail::parse_proxy_protocol(*t, &error)) {
                        l.proxy_protocol = *m;
                      } else {
                        fail(ln, p, std::move(error));
                      }
                    }},
                   {"trusted_proxies",
                    [&](const YAML::Node& v, const std::string& p, int ln) {
                      if (auto s = cidr_list(v, p, ln)) l.trusted_proxies = std::move(*s);
                    }},
                   {"tls",
                    [&](const YAML::Node& v, const std::string& p, int ln) {
                      if (auto t = read_tls(v, p, ln)) l.tls = std::move(*t);
                    }},
               },
               &seen);
  if (is_map && !seen.contains("address")) {
    fail(line, child(path, "address"), "required, e.g. address: \"0.0.0.0:3128\"");
  }
  return l;
}

// A DNS server: "IP", "IP:PORT", "[IPv6]:PORT", or a bare IPv6 address (port 53). A literal
// address only: the resolver cannot look up its own server.
bool parse_dns_server(std::string_view text, std::string* error) {
  const std::string shape =
      "expected IP, IP:PORT or [IPv6]:PORT with a literal address, e.g. \"10.0.0.2\" or "
      "\"[fd00::53]:5353\", got '" +
      std::string(text) + "'";
  std::string_view host = text;
  std::optional<std::string_view> port;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      *error = shape;
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    bracketed = true;
  } else if (const auto colon = text.find(':');
             colon != std::string_view::npos && colon == text.rfind(':')) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const auto addr = acl::parse_address(host);
  if (!addr || (bracketed && !addr->is_v6())) {
    *error = shape;
    return false;
  }
  if (port) {
    std::string why;
    const auto p = detail::parse_uint(*port, &why);
    if (!p || *p < 1 || *p > 65535) {
      *error = "port must be between 1 and 65535, got '" + std::string(*port) + "'";
      return false;
    }
  }
  return true;
}

bool valid_rule_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
}

acl::rule reader::read_rule(const YAML::Node& n, const std::string& path, int line,
                            std::size_t index) {
  acl::rule r;
  r.name = "rule-" + std::to_string(index + 1);
  std::set<std::string> seen;
  const bool is_map = read_map(
      n, path, line,
      {
          {"name",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             auto t = text(v, p, ln, "a name");
             if (!t) return;
             // The name goes into every access log line, including the space-separated squid
             // format, so it is kept to characters no log parser trips over.
             if (!valid_rule_name(*t)) {
               fail(ln, p, "must be 1-64 characters: letters, digits, '.', '_', ':' or '-'");
               return;
             }
             r.name = *t;
           }},
          {"action",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             auto t = text(v, p, ln, "allow or deny");
             if (!t) return;
             if (*t == "allow") {
               r.action = acl::rule_action::allow;
             } else if (*t == "deny") {
               r.action = acl::rule_action::deny;
             } else {
               fail(ln, p, "must be allow or deny, got '" + *t + "'");
             }
           }},
          {"sources",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto s = cidr_list(v, p, ln)) {
               if (!r.sources) r.sources.emplace();
               r.sources->add(*s);
             }
             require_items(v, p, ln);
           }},
          {"sources_file",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             // Merged with `sources` when both are given. An empty file matches no client.
             if (auto s = cidr_file(v, p, ln, &r.sources_file)) {
               if (!r.sources) r.sources.emplace();
               r.sources->add(*s);
             }
           }},
          {"domains",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
               if (auto d = parsed(e, ep, el, "a domain", detail::parse_domain)) {
                 r.domains.push_back(std::move(*d));
               }
             });
             require_items(v, p, ln);
           }},
          {"destinations",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto s = cidr_list(v, p, ln)) r.destinations = std::move(*s);
             require_items(v, p, ln);
           }},
          {"ports",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto s = port_list(v, p, ln)) r.ports = std::move(*s);
             require_items(v, p, ln);
           }},
          {"methods",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
               auto t = text(e, ep, el, "connect or http");
               if (!t) return;
               if (*t == "connect") {
                 r.methods |= static_cast<std::uint8_t>(acl::method_class::connect);
               } else if (*t == "http") {
                 r.methods |= static_cast<std::uint8_t>(acl::method_class::http);
               } else {
                 fail(el, ep, "must be connect or http, got '" + *t + "'");
               }
             });
             require_items(v, p, ln);
           }},
          {"vpce_ids",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
               if (auto id = parsed(e, ep, el, "a VPC endpoint id", detail::parse_vpce_id)) {
                 r.vpce_ids.push_back(std::move(*id));
               }
             });
             require_items(v, p, ln);
           }},
          {"client_identities",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
               auto t = text(e, ep, el, "a client certificate identity");
               if (!t) return;
               if (t->empty() || *t == "*") {
                 fail(el, ep, "must name an identity or a prefix ending in '*', got '" + *t + "'");
               } else {
                 r.client_identities.push_back(std::move(*t));
               }
             });
             require_items(v, p, ln);
           }},
          {"bind",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto a = parsed(v, p, ln, "an IP address", detail::parse_bind_address)) r.bind = a;
           }},
          {"report_only",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto b = boolean(v, p, ln)) r.report_only = *b;
           }},
      },
      &seen);
  if (is_map && !seen.contains("action")) {
    fail(line, child(path, "action"), "required (allow or deny)");
  }
  return r;
}

void reader::read_root(const YAML::Node& root, config& cfg) {
  const int root_line = line_of(root, 1);
  if (!root.IsMap()) {
    fail(root_line, "", "expected a mapping at the top level, got " + kind(root));
    return;
  }
  auto set_duration = [&](duration& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto d = read_duration(v, p, ln)) target = *d;
    };
  };
  auto set_size = [&](std::size_t& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto s = read_size(v, p, ln)) target = *s;
    };
  };
  auto set_count = [&](std::size_t& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto i = integer(v, p, ln)) target = static_cast<std::size_t>(*i);
    };
  };
  auto set_cidrs = [&](acl::cidr_set& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto s = cidr_list(v, p, ln)) target = std::move(*s);
    };
  };
  auto set_ports = [&](acl::port_set& target) {
    return [&](const YAML::Node& v, const std::string& p, int ln) {
      if (auto s = port_list(v, p, ln)) target = std::move(*s);
    };
  };
  auto section = [&](std::vector<field> fields) {
    return [this, fields = std::move(fields)](const YAML::Node& v, const std::string& p, int ln) {
      read_map(v, p, ln, fields);
    };
  };

  // gates.sources and gates.sources_file together replace the default source gate.
  acl::cidr_set gate_sources;
  bool gate_sources_given = false;
  std::set<std::string> seen;
  read_map(
      root, "", root_line,
      {
          {"version",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto i = integer(v, p, ln)) {
               cfg.version = static_cast<int>(std::min<std::uint64_t>(*i, INT_MAX));
             }
           }},
          {"workers",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             if (auto i = integer(v, p, ln)) {
               cfg.workers = static_cast<unsigned>(std::min<std::uint64_t>(*i, UINT_MAX));
             }
           }},
          {"listeners",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             std::vector<listener> out;
             if (read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
                   out.push_back(read_listener(e, ep, el));
                 })) {
               cfg.listeners = std::move(out);
             }
           }},
          {"admin",
           section({{"address",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto e = parsed(v, p, ln, "HOST:PORT", detail::parse_endpoint))
                         cfg.admin.address = *e;
                     }},
                    {"tls",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto t = read_tls(v, p, ln)) cfg.admin.tls = std::move(*t);
                     }},
                    {"health_address",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto e = parsed(v, p, ln, "HOST:PORT", detail::parse_endpoint))
                         cfg.admin.health_address = *e;
                     }}})},
          {"gates",
           section({{"sources",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto s = cidr_list(v, p, ln)) gate_sources.add(*s);
                       gate_sources_given = true;
                     }},
                    {"sources_file",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto s = cidr_file(v, p, ln, &cfg.gate.sources_file)) {
                         gate_sources.add(*s);
                       }
                       gate_sources_given = true;
                     }},
                    {"connect_ports", set_ports(cfg.gate.connect_ports)},
                    {"http_ports", set_ports(cfg.gate.http_ports)},
                    {"deny_ip_literals",
                     [&](const YAML::Node& v, const std::string& p, int ln) {
                       if (auto b = boolean(v, p, ln)) cfg.gate.deny_ip_literals = *b;
                     }}})},
          {"destinations", section({{"deny_special",
                                     [&](const YAML::Node& v, const std::string& p, int ln) {
                                       if (auto b = boolean(v, p, ln)) cfg.dest.deny_special = *b;
                                     }},
                                    {"allow", set_cidrs(cfg.dest.allow)},
                                    {"deny", set_cidrs(cfg.dest.deny)}})},
          {"rules",
           [&](const YAML::Node& v, const std::string& p, int ln) {
             std::vector<acl::rule> out;
             if (read_list(v, p, ln, [&](const YAML::Node& e, const std::string& ep, int el) {
                   out.push_back(read_rule(e, ep, el, out.size()));
                 })) {
               cfg.rules = std::move(out);
             }
           }},
          {"egress", section({{"bind",
                               [&](const YAML::Node& v, const std::string& p, int ln) {
                                 auto t = text(v, p, ln, "an IP address or \"\"");
                                 if (!t) return;
                                 if (t->empty()) {
                                   cfg.egress_bind.reset();
                                   return;
                                 }
                                 std::string error;
                                 if (auto a = detail::parse_bind_address(*t, &error)) {
                                   cfg.egress_bind = a;
                                 } else {
                                   fail(ln, p, error + " (use \"\" for the kernel's choice)");
                                 }
                               }}})},
          {"headers", section({{"x_forwarded_for",
                                [&](const YAML::Node& v, const std::string& p, int ln) {
                                  auto t = enum_text(v, p, ln, "append, replace, delete or off");
                                  if (!t) return;
                                  std::string error;
                                  if (auto m = detail::parse_xff(*t, &error)) {
                                    cfg.hdr.x_forwarded_for = *m;
                                  } else {
                                    fail(ln, p, std::move(error));
                                  }
                                }},
                               {"via",
                                [&](const YAML::Node& v, const std::string& p, int ln) {
                                  if (auto b = boolean(v, p, ln)) cfg.hdr.via = *b;
                                }},
                               {"via_name",
                                [&](const YAML::Node& v, const std::string& p, int ln) {
                                  auto t = text(v, p, ln, "an HTTP token");
                                  if (!t) return;
                                  std::string error;
                                  if (detail::parse_via_name(*t, &error)) {
                                    cfg.hdr.via_name = *t;
                                  } else {
                                    fail(ln, p, std::move(error));
                                  }
                                }}})},
          {"timeouts", section({{"header", set_duration(cfg.timeout.header)},
                                {"keepalive_idle", set_duration(cfg.timeout.keepalive_idle)},
                                {"connect", set_duration(cfg.timeout.connect)},
                                {"dns", set_duration(cfg.timeout.dns)},
                                {"response_header", set_duration(cfg.timeout.response_header)},
                                {"idle", set_duration(cfg.timeout.idle)},
                                {"tunnel_idle", set_duration(cfg.timeout.tunnel_idle)},
                                {"tls_handshake", set_duration(cfg.timeout.tls_handshake)}})},
          {"limits", section({{"request_line", set_size(cfg.limit.request_line)},
                              {"header_block", set_size(cfg.limit.header_block)},
                              {"header_fields", set_count(cfg.limit.header_fields)},
                              {"max_connections", set_count(cfg.limit.max_connections)},
                              {"buffer_size", set_size(cfg.limit.buffer_size)}})},
          {"relay", section({{"splice",
                              [&](const YAML::Node& v, const std::string& p, int ln) {
                                if (auto b = boolean(v, p, ln)) cfg.relay.splice = *b;
                              }},
                             {"pipe_size", set_size(cfg.relay.pipe_size)},
                             {"max_pipes", set_count(cfg.relay.max_pipes)}})},
          {"upstream", section({{"keepalive",
                                 [&](const YAML::Node& v, const std::string& p, int ln) {
                                   if (auto b = boolean(v, p, ln)) cfg.upstream.keepalive = *b;
                                 }},
                                {"idle_timeout", set_duration(cfg.upstream.idle_timeout)},
                                {"max_idle", set_count(cfg.upstream.max_idle)},
                                {"max_idle_per_host", set_count(cfg.upstream.max_idle_per_host)}})},
          {"dns", section({{"servers",
                            [&](const YAML::Node& v, const std::string& p, int ln) {
                              std::vector<std::string> out;
                              bool items_ok = true;
                              const bool is_list = read_list(
                                  v, p, ln,
                                  [&](const YAML::Node& e, const std::string& ep, int el) {
                                    auto t = text(e, ep, el, "a DNS server address");
                                    if (!t) {
                                      items_ok = false;
                                      return;
                                    }
                                    std::string error;
                                    if (parse_dns_server(*t, &error)) {
                                      out.push_back(*t);
                                    } else {
                                      fail(el, ep, std::move(error));
                                      items_ok = false;
                                    }
                                  });
                              if (is_list && items_ok) cfg.dns.servers = std::move(out);
                            }},
                           {"cache_size", set_count(cfg.dns.cache_size)},
                           {"min_ttl", set_duration(cfg.dns.min_ttl)},
                           {"max_ttl", set_duration(cfg.dns.max_ttl)},
                           {"negative_ttl", set_duration(cfg.dns.negative_ttl)}})},
          {"log", section({{"level",
                            [&](const YAML::Node& v, const std::string& p, int ln) {
                              auto t = enum_text(v, p, ln, "a log level");
                              if (!t) return;
                              std::string error;
                              if (detail::parse_log_level(*t, &error)) {
                                cfg.log.level = *t;
                              } else {
                                fail(ln, p, std::move(error));
                              }
                            }},
                           {"format",
                            [&](const YAML::Node& v, const std::string& p, int ln) {
                              if (auto f =
                                      parsed(v, p, ln, "json or squid", detail::parse_log_format))
                                cfg.log.format = *f;
                            }},
                           {"access",
                            [&](const YAML::Node& v, const std::string& p, int ln) {
                              // Only the spellings of false, not every YAML 1.1 boolean: "no" or
                              // "n" may well be meant as a file name.
                              std::optional<std::string> t;
                              if (is_plain(v) && (v.Scalar() == "false" || v.Scalar() == "False" ||
                                                  v.Scalar() == "FALSE")) {
                                t = "off";
                              } else {
                                t = text(v, p, ln, "stdout, off or a file path");
                              }
                              if (!t) return;
                              std::string error;
                              if (detail::parse_access_log(*t, &error)) {
                                cfg.log.access = *t;
                              } else {
                                fail(ln, p, std::move(error));
                              }
                            }}})},
          {"drain", section({{"delay", set_duration(cfg.drain_.delay)},
                             {"timeout", set_duration(cfg.drain_.timeout)}})},
      },
      &seen);
  if (gate_sources_given) cfg.gate.sources = std::move(gate_sources);
  if (!seen.contains("version")) fail(root_line, "version", "required; expected version: 1");
}

int reader::line_for(const issue& is) const {
  if (auto it = lines_.find(is.path); it != lines_.end()) return it->second;
  for (const auto& r : is.related) {
    if (auto it = lines_.find(r); it != lines_.end()) return it->second;
  }
  for (std::string p = parent(is.path); !p.empty(); p = parent(p)) {
    if (auto it = lines_.find(p); it != lines_.end()) return it->second;
  }
  return 0;
}

void reader::add_issues(const std::vector<issue>& issues) {
  for (const auto& is : issues) {
    // A field that failed to parse kept its default, so cross-field checks on it (or on the list
    // it belongs to) would only repeat the first error in a more confusing form.
    const bool follows_parse_error =
        std::any_of(failed_paths_.begin(), failed_paths_.end(), [&](const std::string& f) {
          auto touches = [&](const std::string& p) {
            return detail::path_within(f, p) || detail::path_within(p, f);
          };
          return touches(is.path) || std::any_of(is.related.begin(), is.related.end(), touches);
        });
    if (!follows_parse_error) errors_.push_back({file_, line_for(is), is.path, is.message});
  }
}

std::vector<config_error> reader::take_errors() {
  std::stable_sort(errors_.begin(), errors_.end(),
                   [](const config_error& a, const config_error& b) { return a.line < b.line; });
  return std::move(errors_);
}

}  // namespace

std::string endpoint::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string config_error::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!path.empty()) out += path + ": ";
  out += message;
  return out;
}

config defaults() {
  config cfg;
  listener l;
  l.address = endpoint{"0.0.0.0", 3128};
  cfg.listeners.push_back(l);
  cfg.admin.address = endpoint{"127.0.0.1", 9090};
  // Loopback, RFC 1918 and ULA: never an open proxy out of the box.
  for (auto c :
       {"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}) {
    cfg.gate.sources.add(must_parse_cidr(c));
  }
  cfg.gate.connect_ports.add({443, 443});
  cfg.gate.http_ports.add({80, 80});
  return cfg;
}

load_result load_yaml(const std::string& text, const std::string& file_name) {
  load_result res;
  try {
    YAML::Node root;
    document_counter counter;
    try {
      std::istringstream in(text);
      YAML::Parser parser(in);
      while (counter.documents() < 2 && parser.HandleNextDocument(counter)) {
      }
      if (counter.documents() > 0) root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
      res.errors.push_back({file_name, line, "", "YAML syntax error: " + e.msg});
      return res;
    }
    if (counter.documents() == 0 || root.IsNull()) {
      res.errors.push_back({file_name, 0, "", "empty config; expected at least version: 1"});
      return res;
    }
    if (counter.documents() > 1) {
      // A second document would be silently ignored by the reader, hiding whatever it holds.
      res.errors.push_back({file_name, counter.second_line(), "",
                            "more than one YAML document; expected exactly one"});
      return res;
    }
    config cfg = defaults();
    cfg.source = file_name;
    reader r(file_name);
    r.read_root(root, cfg);
    cfg.watched_files = r.watched();
    r.add_issues(detail::validate(cfg));
    res.errors = r.take_errors();
    if (res.errors.empty()) res.cfg = std::move(cfg);
  } catch (const std::exception& e) {
    // yaml-cpp throws from iteration and conversion in corner cases the reader does not foresee;
    // a config error is reported, never an escaped exception.
    res.cfg.reset();
    res.errors.push_back({file_name, 0, "", std::string("cannot read config: ") + e.what()});
  }
  return res;
}

load_result load_file(const std::string& path) {
  load_result res;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::error_code ec(errno, std::generic_category());
    res.errors.push_back({path, 0, "", "cannot open config file: " + ec.message()});
    return res;
  }
  std::string text;
  char buf[16384];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::error_code ec(errno, std::generic_category());
      ::close(fd);
      res.errors.push_back({path, 0, "", "cannot read config file: " + ec.message()});
      return res;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return load_yaml(text, path);
}

}  // namespace egressd::config
