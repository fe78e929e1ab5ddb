"""Rate-limit steps: token buckets in the process (`buckets`) or shared by every replica
through Redis (`shared`), taken by the endpoint's step (`step`)."""
