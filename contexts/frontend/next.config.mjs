/** @type {import('next').NextConfig} */
const nextConfig = {
  // Self-contained server in .next/standalone (server.js + traced node_modules).
  output: "standalone",
  poweredByHeader: false,
  // slipway passes SLIPWAY_BUILD_ID (from the build's input digest) to `next build`: the same
  // sources give the same build ID, so the same image. Outside slipway, Next.js picks one.
  generateBuildId: async () => process.env.SLIPWAY_BUILD_ID || null,
};

export default nextConfig;
