FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scanstream scanstream
COPY consumers consumers
RUN pip install --no-cache-dir .
USER nobody
CMD ["scanstream", "api", "--host", "0.0.0.0"]
