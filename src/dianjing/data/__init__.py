"""Data: readers → formats → Conversation → template render (ids + loss mask) → batching."""
