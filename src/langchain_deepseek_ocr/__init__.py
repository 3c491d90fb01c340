"""DeepSeek-OCR for LangChain."""
