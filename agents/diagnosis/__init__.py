"""The diagnosis agent: diagnosis requests in, hypotheses with evidence and a remediation plan out."""
