"""Corpus builders behind `audiopipe.data.download.download(source, ...)`."""
