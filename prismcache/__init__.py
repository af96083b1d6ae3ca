"""prismcache: a category-aware semantic cache for LLM serving."""
