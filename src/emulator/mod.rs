//! The STS emulator (a stand-in for Alibaba Cloud STS in tests, the quickstart and benchmarks).
