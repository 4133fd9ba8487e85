# twoway: one image for the API, the workers and the one-shot commands (entrypoint `twoway`).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# Pinned by constraints.txt, so the image holds exactly what the tests ran against.
RUN pip install --prefix=/install -c constraints.txt .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 API_HOST=0.0.0.0 API_PORT=8000 LOG_JSON=true
COPY --from=build /install /usr/local
RUN useradd --system --create-home --uid 10001 twoway
USER twoway
WORKDIR /home/twoway
EXPOSE 8000
ENTRYPOINT ["twoway"]
CMD ["api"]
