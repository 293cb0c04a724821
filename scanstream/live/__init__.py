"""Live progress: Server-Sent Events framing and the per-process fan-out of stream entries."""
