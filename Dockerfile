# One image, two commands: `webhook` (the admission webhook) and `elector` (the sidecar it
# injects). The webhook injects its own image, so the two always come from one build.
#
#   docker build -t lifelease:dev .
#   docker run --rm lifelease:dev elector --help
#
# The build stage runs exactly what CI runs (`npm ci`, `npm run build`); the runtime stage
# holds the bundles only: no npm, no node_modules, no shell, a numeric non-root user, and
# nothing written at run time (works with readOnlyRootFilesystem).

ARG NODE_MAJOR=24

FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY common/ common/
COPY elector/ elector/
COPY webhook/ webhook/
COPY scripts/build.ts scripts/build.ts
RUN npm run build

FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian12:nonroot
LABEL org.opencontainers.image.title="lifelease" \
      org.opencontainers.image.description="Lease-for-life leader election for Kubernetes pods: webhook and elector sidecar" \
      org.opencontainers.image.licenses="MIT"
WORKDIR /app
COPY --from=build /src/dist/ /app/dist/
ENV NODE_ENV=production
USER 65532:65532
EXPOSE 8443 4040 4041
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["--help"]
