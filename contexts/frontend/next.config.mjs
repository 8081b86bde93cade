/** @type {import('next').NextConfig} */
const nextConfig = {
  // Self-contained server in .next/standalone (server.js + traced node_modules).
  output: "standalone",
  poweredByHeader: false,
};

export default nextConfig;
