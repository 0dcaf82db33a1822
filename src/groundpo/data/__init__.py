"""Data layer for multi-view preference rows: columns and row checks, processor, collator, sampler."""
