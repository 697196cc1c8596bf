# ws-broadcast-service, one instance: compiled JavaScript on Node 20, with
# production dependencies only (no TypeScript, no tsx, no test or bench code).

# 1. Build: every dependency, the compiler, the service's sources.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY server ./server
COPY client-demo/public ./client-demo/public
RUN npm run build

# 2. Production dependencies alone.
FROM node:20-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# 3. What runs.
FROM node:20-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist

# The image's unprivileged user; the code stays root-owned and read-only to it.
USER node

EXPOSE 8000
# /readyz, not /healthz: "healthy" here means "send me new clients", so a
# draining instance (503) turns unhealthy and compose's depends_on and any
# health-aware proxy skip it; nothing restarts an unhealthy container by
# itself. No curl in node:20-slim: node asks.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/readyz').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# PID 1 is node itself, no tini: the service installs its own SIGTERM/SIGINT
# handlers (the kernel's PID 1 default of ignoring them does not apply to
# handled signals), and it starts no child processes, so there are no zombies
# to reap. SIGTERM drains (refuse new clients, serve the connected ones until
# they leave or FORCED_SHUTDOWN_AFTER_SEC); a second SIGTERM closes them at once.
STOPSIGNAL SIGTERM
CMD ["node", "dist/server/main.js"]
