// The example Node.js client (clients/node) against a real coved on its locked
// embedded bus (TLS + the admin nkey coved writes): a computation end to end, a
// failing algorithm, and an agent whose measurement the policy does not accept.
// The client's stdout is one line per step; the checks read the event sequence.
#include <sys/wait.h>

#include <csignal>
#include <cstdlib>
#include <sstream>

#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

/// Index of the first line at or after `from` that starts with `prefix`, or -1.
long find_line(const std::vector<std::string>& lines, const std::string& prefix, size_t from = 0) {
  for (size_t i = from; i < lines.size(); ++i)
    if (lines[i].starts_with(prefix)) return static_cast<long>(i);
  return -1;
}

struct client_run {
  int exit_code = -1;
  std::vector<std::string> out;
  std::string text;  // stdout and stderr, for failure messages
};

class node_cluster {
 public:
  node_cluster() {
    coved_ = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--listen", "127.0.0.1:0",
                                              "--state-dir", state().string(), "--log-level", "debug"},
                                             {}, dir_.path(), "coved"),
                  "coved");
    // Ready when the admin (the identity the Node client uses) gets an answer from the manager.
    bool ready = test::wait_until(
        [&] {
          REQUIRE(coved_.running());
          auto url = read_file(state() / "nats.url");
          if (url.empty()) return false;
          url = url.substr(0, url.find('\n'));
          auto c = bus::connection::connect(must(cli::bus_options(url, "", "", state()), "options"));
          if (!c) return false;
          flatbuffers::FlatBufferBuilder b(64);
          return bus::request_typed<v1::CvmList>(**c, bus::subjects::manager_list,
                                                 bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest"), 2s)
              .has_value();
        },
        test::deadline_in(20s));
    REQUIRE_MESSAGE(ready, "coved did not become ready; log in " << dir_.path());
  }
  ~node_cluster() {
    if (coved_.running()) {
      auto status = coved_.terminate(10s);
      CHECK_MESSAGE(status == 0, "coved exit status " << status.value_or(-1) << "; log in " << dir_.path());
    }
  }
  node_cluster(const node_cluster&) = delete;
  node_cluster& operator=(const node_cluster&) = delete;

  fs::path dir() const { return dir_.path(); }
  fs::path state() const { return dir_.path() / "state"; }

  fs::path make_file(const std::string& name, std::string_view content, bool executable = false) {
    auto p = dir_.path() / name;
    write_file(p, content,
               executable ? fs::perms::owner_all : fs::perms::owner_read | fs::perms::owner_write);
    return p;
  }

  /// Runs the client with `args` after "--state-dir <state>"; at most 40 s.
  client_run run(const std::string& name, std::vector<std::string> args) {
    std::vector<std::string> argv = {COVE_NODE_EXECUTABLE, COVE_NODE_CLIENT_JS, "--state-dir",
                                     state().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = must(test::child_process::spawn(argv, {}, dir_.path(), name), "node");
    auto st = p.wait_for_exit(test::deadline_in(40s));
    client_run r;
    r.text = read_file(dir_.path() / (name + ".stdout"));
    r.out = lines_of(r.text);
    r.text += read_file(dir_.path() / (name + ".stderr"));
    REQUIRE_MESSAGE(st.has_value(), "the Node client did not finish in 40 s:\n" << r.text);
    REQUIRE_MESSAGE(WIFEXITED(*st), "the Node client died: status " << *st << "\n" << r.text);
    r.exit_code = WEXITSTATUS(*st);
    return r;
  }

 private:
  test::temp_dir dir_{"cove-node"};
  embedded_server_reaper reaper_{dir_.path() / "state"};  // runs after coved_ is gone
  test::child_process coved_;
};

/// The CVM id from the client's "cvm <id> running" line.
std::string cvm_of(const client_run& r) {
  auto i = find_line(r.out, "cvm ");
  REQUIRE_MESSAGE(i >= 0, r.text);
  auto line = r.out[static_cast<size_t>(i)];
  auto id = line.substr(4, line.find(' ', 4) - 4);
  CHECK_MESSAGE(line == "cvm " + id + " running", r.text);
  return id;
}

}  // namespace

TEST_CASE("node client: creates a CVM, runs a computation, follows its events, fetches the result") {
  // The admin creates, starts and follows; the participant's own key (its nkey) uploads and downloads.
  node_cluster c;
  auto algo = c.make_file("count.sh", "#!/bin/sh\ncat datasets/* | wc -l > results/rows\n", true);
  auto data = c.make_file("rows.csv", "a\nb\nc\nd\ne\n");
  auto out = c.dir() / "result.zip";
  auto r = c.run("node-ok", {"run", "--algo", algo.string(), "--dataset", data.string(), "--out",
                             out.string(), "--deadline", "30", "--participant-bus"});
  INFO(r.text);
  CHECK(r.exit_code == 0);
  REQUIRE(find_line(r.out, "connected tls://") == 0);  // the locked bus, over TLS, with an nkey
  CHECK(r.out[0].find(" as U") != std::string::npos);
  auto cvm = cvm_of(r);

  // The agent's state events arrive in order, and so do the client's own steps;
  // between the two only causality is fixed (an event and the reply to the
  // request that caused it travel different paths).
  auto in_order = [&](const std::vector<std::string>& sequence) {
    std::vector<long> at;
    size_t from = 0;
    for (const auto& step : sequence) {
      auto i = find_line(r.out, step, from);
      CHECK_MESSAGE(i >= 0, "missing '" << step << "' after line " << from);
      at.push_back(i);
      if (i >= 0) from = static_cast<size_t>(i) + 1;
    }
    return at;
  };
  const std::string ev = "event computation " + cvm + " ";
  auto events = in_order({ev + "ReceivingManifest waiting for a computation manifest",
                          ev + "ReceivingAlgorithm manifest 'node-",
                          ev + "ReceivingData waiting for 1 dataset(s)", ev + "Running all inputs received",
                          ev + "ConsumingResults results ready", ev + "Complete results consumed"});
  auto steps = in_order({"cvm " + cvm + " running", "computation node-",
                         "connected tls://",  // again, as the participant, admitted by the start
                         "attested " + cvm + " report v", "uploaded algorithm algo (",
                         "uploaded dataset rows.csv (10 bytes, 1 chunks)", "result ", "computation node-",
                         "cvm " + cvm + " removed"});
  CHECK(r.out[static_cast<size_t>(std::max(steps[1], 0L))].ends_with(" ReceivingAlgorithm"));
  CHECK(r.out[static_cast<size_t>(std::max(steps[7], 0L))].ends_with(" Complete"));
  auto participant = r.out[static_cast<size_t>(std::max(steps[2], 0L))];
  CHECK(participant.find(" as participant U") != std::string::npos);
  CHECK(participant.substr(participant.find(" U")) != r.out[0].substr(r.out[0].find(" U")));
  CHECK(events[4] < steps[6]);  // the result is fetched after ConsumingResults ...
  CHECK(events[5] < steps[7]);  // ... and the run is over once Complete was seen
  // The upload events name both files.
  CHECK(find_line(r.out, "event upload " + cvm + " ReceivingAlgorithm algorithm received and verified") >= 0);
  CHECK(find_line(r.out, "event upload " + cvm + " ReceivingData dataset 'rows.csv' received and verified") >=
        0);
  // Nothing of this CVM went wrong on the way.
  CHECK(find_line(r.out, "event computation " + cvm + " Failed") < 0);
  CHECK(find_line(r.out, "error") < 0);
  // The unsealed result is cove's zip of results/: it holds the algorithm's output.
  auto zip = read_file(out);
  REQUIRE(zip.size() > 30);
  CHECK(zip.starts_with("PK\x03\x04"));
  CHECK(zip.find("rows") != std::string::npos);
  CHECK(zip.find("5\n") != std::string::npos);
}

TEST_CASE("node client: a failing algorithm ends in Failed with its stderr, exit code 3") {
  node_cluster c;
  auto algo = c.make_file("fail.sh", "#!/bin/sh\necho 'no model today' >&2\nexit 7\n", true);
  auto r = c.run("node-fail", {"run", "--algo", algo.string(), "--deadline", "30"});
  INFO(r.text);
  CHECK(r.exit_code == 3);
  auto cvm = cvm_of(r);
  auto running = find_line(r.out, "event computation " + cvm + " Running");
  CHECK(running >= 0);
  auto failed =
      find_line(r.out, "event computation " + cvm + " Failed", static_cast<size_t>(std::max(running, 0L)));
  REQUIRE(failed >= 0);
  CHECK(r.out[static_cast<size_t>(failed)].find("no model today") != std::string::npos);
  CHECK(find_line(r.out, "result ") < 0);
  CHECK(find_line(r.out, "cvm " + cvm + " removed") >= 0);
}

TEST_CASE("node client: an agent outside the policy gets nothing; bad arguments are refused") {
  node_cluster c;
  // The host's policy, with a measurement no agent has.
  auto policy = read_file(c.state() / "sim" / "policy.json");
  auto key = std::string("\"measurements\"");
  auto at = policy.find(key);
  REQUIRE(at != std::string::npos);
  auto open = policy.find('[', at), close = policy.find(']', at);
  policy.replace(open, close - open + 1, "[\"" + std::string(96, 'a') + "\"]");
  auto bad_policy = c.make_file("other-policy.json", policy);
  auto algo = c.make_file("algo.sh", "#!/bin/sh\ntrue\n", true);
  auto r = c.run("node-policy", {"run", "--algo", algo.string(), "--policy", bad_policy.string()});
  INFO(r.text);
  CHECK(r.exit_code == 1);
  auto err = find_line(r.out, "error attestation_failed: measurement: got ");
  CHECK(err >= 0);
  CHECK(find_line(r.out, "uploaded") < 0);
  CHECK(find_line(r.out, "cvm " + cvm_of(r) + " removed") >= 0);

  auto usage = c.run("node-usage", {"run", "--algo-type", "cobol", "--algo", algo.string()});
  CHECK(usage.exit_code == 2);
  CHECK(usage.text.find("--algo-type: 'cobol' is not bin, python or wasm") != std::string::npos);
}
