# HCL files are read like JSON ones, after agent.json (lexical order in a config dir).
# A monitoring client only wants instances whose checks pass.
dns_config {
  only_passing = true
  node_ttl     = "10s"
}
