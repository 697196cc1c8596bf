# ws-broadcast-service, one instance. Runs from source: tsx (a runtime
# dependency) compiles the TypeScript on load, exactly as `npm start` does.
FROM node:20-slim

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY server ./server
COPY client-demo/public ./client-demo/public

# The image's unprivileged user; the code stays root-owned and read-only to it.
USER node

EXPOSE 8000
# SIGTERM drains (refuse new clients, serve the connected ones until they leave
# or FORCED_SHUTDOWN_AFTER_SEC); a second SIGTERM closes them at once. Node is
# PID 1 here and handles both itself.
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "server/main.ts"]
