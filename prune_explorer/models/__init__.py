"""What is pruned: loading models (built-ins, folders, hub ids, GGUF, llama2.c), the dense model every
session shares with its cache, the memory check, and layer discovery."""
