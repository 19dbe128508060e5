// The whole user journey on the embedded default: attest -> upload algorithm and
// data -> run -> fetch and decrypt the result.
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;

TEST_CASE("a python computation runs end to end and only the consumer can read the result") {
  cluster c;
  auto algo_owner = c.make_participant("algo");
  auto hospital_a = c.make_participant("a", crypto::key_type::ecdsa_p256);
  auto hospital_b = c.make_participant("b", crypto::key_type::rsa);
  auto consumer = c.make_participant("consumer");
  auto algo = c.make_file("sum.py",
                          "import os\n"
                          "total = 0\n"
                          "for n in sorted(os.listdir('datasets')):\n"
                          "    total += sum(int(l) for l in open(os.path.join('datasets', n)) if l.strip())\n"
                          "open('results/total.txt', 'w').write(str(total) + '\\n')\n");
  auto a = c.make_file("a.txt", "1\n2\n3\n");
  auto b = c.make_file("b.txt", "10\n20\n");
  auto m = make_manifest("journey-1", algo, algo_type::python, algo_owner,
                         {{a, &hospital_a}, {b, &hospital_b}}, {&consumer});

  auto cvm = c.create_cvm();
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, hospital_a.key, c.policy()), "data a");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, b, hospital_b.key, c.policy()), "data b");
  c.wait_for_state(cvm, "ConsumingResults");

  CHECK(c.fetch_result_file(cvm, consumer, "total.txt") == "36\n");
  CHECK(must(cli::computation_status(c.bus(), cvm)).state == "Complete");
}
