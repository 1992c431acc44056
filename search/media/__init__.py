"""Media: decoding images under a memory budget, serving verified files, pixel prints."""
