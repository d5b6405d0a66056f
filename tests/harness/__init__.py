"""Test harness: starts the test bed's real processes on free loopback ports and stops them."""
