"""Test support code shared by the test layers (not tests themselves)."""
