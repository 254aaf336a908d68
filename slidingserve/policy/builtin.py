"""Imports every built-in policy so that it registers itself."""
